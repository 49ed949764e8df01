"""Data: sources decoded once into cached uint8 tensors (sources, cache, shards), stratified splits and
nested label fractions (splits), batched augmentation (augment). The names a run needs are here."""

from .cache import (
    DataConfig,
    check_out_outside_data,
    check_same_data,
    data_facts,
    data_settings,
    default_cache_dir,
    describe_fingerprint,
    load_data,
    load_dataset,
    open_data,
)
from .sources import Dataset, ImageSet
from .splits import Splits, channel_stats, check_fraction, label_fraction, make_splits, stratified_split

__all__ = ["DataConfig", "Dataset", "ImageSet", "Splits", "channel_stats", "check_fraction", "check_out_outside_data",
           "check_same_data", "data_facts", "data_settings", "default_cache_dir", "describe_fingerprint",
           "label_fraction", "load_data", "load_dataset", "make_splits", "open_data", "stratified_split"]
