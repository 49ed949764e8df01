"""Frozen backbones scored at every label fraction and seed: a linear probe and k-NN on their features
(probe.py), for each pretrained backbone and for each seed's random initialisation, accumulated entry by
entry in the backbone folder's probes.json."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import dist, schema
from ..data import DataConfig, label_fraction, make_splits
from ..data.sources import Dataset
from ..errors import UserError
from ..io import load_json, save_json
from ..layout import PROBES, probe_key
from ..models import load_backbone_weights, make_backbone, read_weights
from ..probe import evaluate_frozen, features, frozen_features, probe_settings
from ..runs import json_roundtrip, settings_diff


def run_probes(net: nn.Module, origin: dict[str, str], folder: Path, keys: list[tuple[float, int]],
               data: DataConfig, ds: Dataset, device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    """Linear probe and k-NN of one frozen backbone at each (fraction, seed) missing from folder/probes.json.

    The labelled subset of (fraction, seed) is the one fine-tuning trains on (same split, same
    label_fraction draw). Features are extracted once for the whole pool and the validation split
    and reused for every entry; each finished entry is saved at once (atomically), so an
    interrupted stage resumes at the first missing entry and a finished one costs nothing. Features are
    extracted under the study's precision, recorded; a folder's probes keep the precision they began
    with (probes from before it was recorded were fp32), so one folder never mixes two.
    """
    if not dist.is_main():  # probes are cheap and single-process: rank 0 computes and writes them
        dist.barrier()
        return {}
    path = folder / PROBES
    store = schema.upgrade(schema.PROBES, load_json(path), path) if path.exists() else None
    if store is not None:  # the folder keeps the precision it began with (fp32 before it was recorded)
        precision = store["settings"]["features_precision"]
    settings = json_roundtrip({**origin, "data": {**dataclasses.asdict(data), "fraction": None},
                               **probe_settings(), "features_precision": precision})
    if store is None:
        store = {schema.SCHEMA_KEY: schema.SCHEMA_VERSION, "settings": settings, "results": {}}
    diff = settings_diff(store["settings"], settings, folder)
    if diff:
        raise UserError(f"{path} holds probes with other settings ({', '.join(diff)}); use another --out or "
                        "delete that file")
    todo = [(f, s) for f, s in keys if probe_key(f, s) not in store["results"]]
    if not todo:
        dist.barrier()
        return store
    splits = make_splits(ds, 1.0, 0, data.val_fraction, data.split_seed).to(device)  # pool in split order
    pool_y = splits.y_train  # fraction 1.0: the labelled set is the whole pool, in pool order
    pool_f, val_f = frozen_features(net.to(device), splits.x_pool, splits.x_val, splits.mean, splits.std, precision)
    test = None  # the test split, when the source has one, scored by the same fitted probes
    if splits.test is not None:
        test = (features(net, splits.test.images, splits.mean, splits.std, precision=precision),
                splits.test.labels.to(device))
    for f, seed in todo:
        t0 = time.perf_counter()
        idx = label_fraction(pool_y.cpu(), f, seed, ds.classes).to(device)
        result = evaluate_frozen(pool_f[idx], pool_y[idx], val_f, splits.y_val, len(ds.classes), test)
        store["results"][probe_key(f, seed)] = {"fraction": f, "seed": seed, "n_train": len(idx), **result,
                                                "time_s": time.perf_counter() - t0}
        save_json(store, path)
    dist.barrier()
    return store


def pretrained_backbone(name: str, channels: int, weights: Path) -> nn.Module:
    net = make_backbone(name, channels)
    load_backbone_weights(net, read_weights(weights), str(weights))
    return net
