"""A run folder: the settings it was made with, its per-epoch CSV and its summary.

A run is finished when its summary.json exists; one with other settings is never resumed or
reused, since mixing them would silently change its numbers. Training (train.fit) writes these
files; studies and the report read them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import load_json, save_text
from .layout import CONFIG, SUMMARY


def json_roundtrip(obj: Any) -> Any:
    """obj as it reads back from JSON (tuples become lists, paths strings), so stored and new settings compare."""
    return json.loads(json.dumps(obj, default=str))


def finished_summary(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a finished run in out_dir, or None; a finished run with other settings is an error."""
    out_dir = Path(out_dir)
    if not (out_dir / SUMMARY).exists():
        return None
    stored = load_json(out_dir / CONFIG) if (out_dir / CONFIG).exists() else {}
    new = json_roundtrip(settings)
    diff = settings_diff({k: stored.get(k) for k in new}, new, out_dir)
    if diff:
        raise UserError(f"{out_dir} holds a finished run with other settings ({', '.join(diff)}); "
                        "use another --out or delete that folder to start afresh")
    return load_json(out_dir / SUMMARY)


def settings_diff(stored: dict[str, Any], new: dict[str, Any], here: Path) -> list[str]:
    """The keys whose values differ; `here` is the folder the stored settings belong to (a run, or the
    pretrained backbone's folder for its probes).

    A study's runs start from its own pretrain-<task>/backbone.safetensors and record that path under
    the study's --out of the time. A study folder moved or copied elsewhere (e.g. by `pretextlab export`)
    still names them there, so the same file in the same-named folder of the study that now holds `here`
    counts as the same start: the folder resumes where it is. The weights' identity is recorded apart
    (init_sha256, backbone_sha256) and the report compares it.
    """
    def moved(old: Any, cur: Any) -> bool:
        return (isinstance(old, str) and isinstance(cur, str) and Path(old).parts[-2:] == Path(cur).parts[-2:]
                and Path(cur).resolve().parents[1] == Path(here).resolve().parent)

    return sorted(k for k in set(stored) | set(new)
                  if stored.get(k) != new.get(k) and not (k == "init" and moved(stored.get(k), new.get(k))))


def check_resumable(out_dir: Path, config: dict, ckpt_path: Path) -> None:
    """Refuse to resume a run whose settings differ: mixing them would silently change its numbers."""
    f = out_dir / CONFIG
    if not ckpt_path.exists() or not f.exists():
        return
    old = load_json(f)
    old.pop("resolved", None)
    diff = settings_diff(old, json_roundtrip(config), out_dir)
    if diff:
        raise UserError(f"{out_dir} holds a run with other settings ({', '.join(diff)}); "
                        "use another --out or delete that folder to start afresh")


def summarize(history: list[dict[str, float]]) -> dict[str, Any]:
    """Best value and epoch of every validation metric (loss: lowest), plus the last epoch's row."""
    best = {}
    for k in history[0]:
        if k.startswith("val_"):
            vals = [r[k] for r in history]
            i = min(range(len(vals)), key=vals.__getitem__) if k.endswith("loss") else max(range(len(vals)), key=vals.__getitem__)
            best[k[4:]] = {"value": vals[i], "epoch": int(history[i]["epoch"])}
    return {"best": best, "last": history[-1], "epochs": len(history)}


def write_csv(history: list[dict[str, float]], path: Path) -> None:
    """One row per evaluation, every key that any row has (atomically: a reader never sees half a file)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    save_text(buf.getvalue(), path)


def read_csv(path: Path) -> list[dict[str, float]]:
    """metrics.csv back as floats; a cell a row left empty is absent from that row."""
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
