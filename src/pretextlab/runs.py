"""A run folder: the settings it was made with, its per-epoch CSV, its summary and its one writer.

A run is finished when its summary.json exists; one with other settings is never resumed or
reused, since mixing them would silently change its numbers. One process writes a folder at a
time (writer_lock). Training (train.fit) writes these files; studies and the report read them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from . import dist, hw
from .errors import UserError
from .io import load_json, save_json, save_text
from .layout import CHECKPOINT, CONFIG, STUDY, SUMMARY


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
    """The keys whose values differ, dotted where nested (train.lr); `here` is the folder the stored settings
    belong to (a run, or the pretrained backbone's folder for its probes).

    A study's runs start from its own pretrain-<task>/backbone.safetensors and record that path under
    the study's --out of the time. A study folder moved or copied elsewhere (e.g. by `pretextlab export`)
    still names them there, so the same file in the same-named folder of the study that now holds `here`
    counts as the same start: the folder resumes where it is. The weights' identity is recorded apart
    (init_sha256, backbone_sha256) and the report compares it.
    """
    def moved(old: Any, cur: Any) -> bool:
        return (isinstance(old, str) and isinstance(cur, str) and Path(old).parts[-2:] == Path(cur).parts[-2:]
                and Path(cur).resolve().parents[1] == Path(here).resolve().parent)

    def diff(old: dict, cur: dict, prefix: str) -> list[str]:
        keys = []
        for k in sorted(set(old) | set(cur)):
            a, b = old.get(k), cur.get(k)
            if isinstance(a, dict) and isinstance(b, dict):
                keys += diff(a, b, f"{prefix}{k}.")
            elif a != b and not (prefix == "" and k == "init" and moved(a, b)):
                keys.append(f"{prefix}{k}")
        return keys

    return diff(stored, new, "")


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


def check_same_run_data(out_dir: Path, fingerprint: dict | None) -> None:
    """Refuse to resume a run whose images changed since it began: its split and label subset would change
    while indices.json kept the old ones. Runs from before the fingerprint was recorded resume as before."""
    from .data import check_same_data

    config, ckpt = Path(out_dir) / CONFIG, Path(out_dir) / CHECKPOINT
    if ckpt.exists() and config.exists():
        stored = load_json(config).get("resolved", {}).get("data_fingerprint")
        check_same_data(stored, fingerprint, f"the run in {out_dir} began with")


def written_here(folder: Path) -> bool:
    """Whether a folder is empty or was written by pretextlab (its lock file, or a run's config.json or a
    study's study.json as pretextlab writes them): --out never overwrites a user's own files."""
    if not any(not p.name.startswith(".") for p in folder.iterdir()) or (folder / LOCK).exists():
        return True
    for name, key in ((CONFIG, "kind"), (STUDY, "preset")):
        try:
            if key in load_json(folder / name):
                return True
        except (OSError, ValueError, TypeError):
            continue
    return False


def summarize(history: list[dict[str, float]]) -> dict[str, Any]:
    """Best value and epoch of every validation metric (loss: lowest), plus the last epoch's row."""
    best = {}
    for k in history[0]:
        if k.startswith("val_"):
            vals = [r[k] for r in history]
            pick = min if k.endswith("loss") else max
            i = pick(range(len(vals)), key=vals.__getitem__)
            best[k[4:]] = {"value": vals[i], "epoch": int(history[i]["epoch"]),
                           **({"step": int(history[i]["step"])} if "step" in history[i] else {})}
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


def stored_precision(out_dir: Path) -> str | None:
    """The precision an interrupted run recorded in its config.json (None: a new run, or a finished one)."""
    config = Path(out_dir) / CONFIG
    return load_json(config).get("resolved", {}).get("precision") if (Path(out_dir) / CHECKPOINT).exists() \
        and config.exists() else None


def decide_precision(requested: str, stored: str | None, device: torch.device, what: str,
                     decided: str | None = None) -> str:
    """The one place a precision is decided, once, and held to: an explicit --precision, else the caller's
    decision (a study decides once for all its runs), else the one a folder recorded (a resumed run or study
    never re-measures), else hw.pick_precision's measurement. Refused in one line where a stored one exists
    and differs (`what` names the folder: "<dir> was trained in").

    Why: `auto` times matmuls, and under load the answer can flip between processes; a run resumed in
    another precision would silently mix two numerics in one curve.
    """
    choice = requested if requested != "auto" else decided or stored or hw.pick_precision("auto", device)
    if stored and choice != stored:
        raise UserError(f"{what} {stored} and this command would go on in {choice}; resume it with --precision "
                        f"{stored} (or auto), or use another --out to start afresh")
    return choice


LOCK = ".lock"  # held by the one process that writes a folder
OWNER = ".lock.owner"  # who holds it: {"pid", "host"}, for the refusal message


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Make `folder` (a run or a study) and hold it exclusively for the with-block: a second process
    on the same folder is refused in one line naming the holder, instead of interleaving its files.
    Temporary files that an interrupted write left behind are removed once the lock is held; a folder
    made here and left empty (the command was refused before writing) is removed again.
    Under torchrun only rank 0 writes, so only rank 0 locks."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if not dist.is_main():
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; pass a folder (a new one, or one pretextlab wrote)")
    created = not folder.exists()
    if not created and not written_here(folder):
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        raise UserError(f"--out {folder} holds files pretextlab did not write ({', '.join(names[:3])}"
                        f"{', ...' if len(names) > 3 else ''}); pass a new or empty folder, so none is overwritten")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / LOCK), timeout=0)
        lock.acquire()
    except Timeout:
        owner = load_json(folder / OWNER) if (folder / OWNER).exists() else {}
        raise UserError(f"{folder} is being written by another process (pid {owner.get('pid', '?')} on "
                        f"{owner.get('host', '?')}); wait for it to finish, or stop it, then run again") from None
    except OSError as e:
        raise UserError(f"cannot write to {folder} ({e.strerror}); pass an --out you can write to") from None
    try:
        save_json({"pid": os.getpid(), "host": socket.gethostname()}, folder / OWNER)
        for stale in folder.glob(".*.tmp"):  # io._atomic's temp files of a killed process
            stale.unlink(missing_ok=True)
        yield
    finally:
        (folder / OWNER).unlink(missing_ok=True)
        lock.release()
        if created and {p.name for p in folder.iterdir()} <= {LOCK}:  # refused before writing: leave no trace
            (folder / LOCK).unlink(missing_ok=True)
            folder.rmdir()
