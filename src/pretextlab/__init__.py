"""pretextlab: does self-supervised pretraining help my classifier, by how much, at which label budget?

The API for notebooks (see pretextlab.api): `run_study`, `write_report`, `load_results`, `DataConfig`.
They are imported on first use, so `import pretextlab` (and the command line) stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DataConfig", "load_results", "run_study", "write_report", "__version__"]

_WHERE = {"DataConfig": "pretextlab.data", "run_study": "pretextlab.study", "write_report": "pretextlab.report",
          "load_results": "pretextlab.api"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'pretextlab' has no attribute {name!r}")
