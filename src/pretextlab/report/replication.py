"""Does the original study's answer hold? A replicate's verdicts on the study it repeats, as numbers.

A study made with `pretextlab study --replicate-of ORIGINAL` runs the original's recipe again under other
seeds (or another precision) and keeps a copy of the original's summary.json as original-summary.json.
Each verdict of the original (every fraction x pretrained arm on the headline quantity, and every probe
protocol x fraction x pretext on macro-F1) is set beside the replicate's and judged by RULE. The original's
numbers come only from that copy, so a copied or exported replicate folder still renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import schema
from ..layout import ORIGINAL_SUMMARY
from .files import read_record
from .results import Study

RULE = ("a verdict held when the replicate's mean paired difference lies inside the original's 95% interval and "
        "the significance verdict (its 95% interval excludes 0, or not) is the same in both studies; otherwise it "
        "did not hold; where either study has no interval (one seed) the verdict is not tested")



def replication_summary(study: Study, summary: dict[str, Any]) -> dict[str, Any] | None:
    """summary.json's "replication" (None when the study is no replicate): both studies' settings, the
    quantities compared and one entry per verdict of the original."""
    of = study.config.replicate_of
    if not of:
        return None
    out: dict[str, Any] = {
        "original": of.study, "source": ORIGINAL_SUMMARY, "rule": RULE,
        "settings": {"original": {"seeds": of.seeds, "precision": of.precision, "pretraining": of.pretraining},
                     "replicate": {"seeds": summary["seeds"], "precision": study.config.precision,
                                   "pretraining": summary["pretraining"]}},
        "quantity": None, "split": None, "verdicts": [], "counts": {}, "problem": None}
    path = Path(study.path) / ORIGINAL_SUMMARY
    if not path.exists():
        out["problem"] = f"{ORIGINAL_SUMMARY} is missing, so the original's verdicts are unknown"
        return out
    # a report's summary.json of any version up to this pretextlab's, checked where the verdicts read it
    original = read_record(path, schema.REPORT, schema.ReportVerdicts)
    quantity = _shared_quantity(original, summary)
    probe_split = "test" if (summary["evaluation"].get("test") and (original.get("evaluation") or {}).get("test")
                             ) else "validation"
    out.update(quantity=quantity, split="test" if quantity.startswith("test_") else "validation",
               probe_split=probe_split,
               verdicts=[*_finetune_verdicts(original, summary, quantity),
                         *_probe_verdicts(original, summary, probe_split)])
    held = [v["held"] for v in out["verdicts"]]
    out["counts"] = {"held": held.count(True), "not_held": held.count(False), "not_tested": held.count(None)}
    return out


def _shared_quantity(original: dict[str, Any], summary: dict[str, Any]) -> str:
    """The replicate's headline quantity where the original has it too (a summary.json written before the
    test split, or without one, has only validation numbers), else best validation macro-F1."""
    mine = summary["headline"]["quantity"]
    has = any(mine in arms.get(arm, {}) for arms in (original.get("comparison") or {}).values() for arm in arms)
    return mine if has else "f1_macro"


def _finetune_verdicts(original: dict[str, Any], summary: dict[str, Any], quantity: str) -> list[dict[str, Any]]:
    """One verdict per fraction x pretrained arm of the original's paired comparison."""
    out = []
    for f, arms in (original.get("comparison") or {}).items():
        for arm, qs in arms.items():
            if quantity not in qs:
                continue
            mine = (summary["comparison"].get(f, {}).get(arm) or {}).get(quantity)
            out.append(judge("finetune", f, arm, quantity, "test" if quantity.startswith("test_") else "validation",
                             _from_comparison(qs[quantity]), _from_comparison(mine) if mine else None))
    return out


def _probe_verdicts(original: dict[str, Any], summary: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """One verdict per probe protocol x fraction x pretext of the original, macro-F1 minus the random init."""
    def vs(s: dict[str, Any]) -> dict[str, Any]:
        ev = s.get("evaluation") or {}
        return ((ev.get("test") or {}) if split == "test" else ev).get("vs_baseline") or {}

    mine, out = vs(summary), []
    for protocol, by_f in vs(original).items():
        if protocol == "finetune":  # fine-tuning's verdicts are the headline's, above
            continue
        for f, methods in by_f.items():
            for method, metrics in methods.items():
                if "f1_macro" in metrics:
                    out.append(judge(protocol, f, method, "f1_macro", split, metrics["f1_macro"],
                                     mine.get(protocol, {}).get(f, {}).get(method, {}).get("f1_macro")))
    return out


def _from_comparison(c: dict[str, Any]) -> dict[str, Any]:
    """A "comparison" entry in the shape of an "evaluation" difference (difference, ci95, significant, n)."""
    return {"difference": c["pretrained_minus_scratch"], "ci95": c.get("paired_ci95"),
            "significant": c.get("significant"), "n": c.get("paired_n")}


def judge(protocol: str, fraction: str, method: str, quantity: str, split: str, original: dict[str, Any],
          replicate: dict[str, Any] | None) -> dict[str, Any]:
    """One verdict by RULE: held True / False, or None (not tested) with the reason."""
    keep = ("difference", "ci95", "significant", "n")
    entry = {"protocol": protocol, "fraction": fraction, "method": method, "quantity": quantity, "split": split,
             "original": {k: original.get(k) for k in keep},
             "replicate": {k: replicate.get(k) for k in keep} if replicate else None,
             "inside": None, "same_significance": None, "held": None, "why": ""}
    if replicate is None:
        entry["why"] = "not in the replicate (runs missing or unfinished)"
        return entry
    if original.get("ci95") is None:
        entry["why"] = "the original has one seed here: no interval to hold"
        return entry
    lo, hi = original["ci95"]
    entry["inside"] = inside = lo <= replicate["difference"] <= hi
    where = "inside" if inside else "outside"
    if replicate.get("ci95") is None:
        entry["why"] = f"the replicate's difference is {where} the original's interval, but it has one seed: no verdict"
        return entry
    entry["same_significance"] = same = bool(replicate["significant"]) == bool(original["significant"])
    entry["held"] = inside and same
    entry["why"] = (f"the replicate's difference is {where} the original's interval and its verdict is "
                    + ("the same" if same else "not the same"))
    return entry
