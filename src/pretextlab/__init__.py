"""pretextlab: does self-supervised pretraining help my classifier, by how much, at which label budget?"""

__version__ = "0.1.0"
