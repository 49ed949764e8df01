"""How much pretraining pays, in a study whose pretraining length is an axis (--pretrain-epochs 2,8,32): per
pretext task and label fraction, the fine-tuning gain over scratch at each length (the headline quantity, paired
by seed, with its 95% interval), rules.length_verdict's call on it (still rising, saturated, no gain) and the
length that pays; beside it, what each length cost (pretraining minutes) and how well the pretext task itself
did on held-out images at its end (does the pretext get better while the gain does not?)."""

from __future__ import annotations

import statistics
from typing import Any

from ..layout import LENGTH_SUFFIX, length_arm, pretext_of
from .formatting import number
from .results import Study, fraction_key
from .rules import length_verdict


def pretext_end(study: Study, arm: str) -> dict[str, float | None]:
    """Mean over the arm's pretrainings of their last held-out accuracy (None where the task has none) and
    loss, and of their training minutes."""
    runs = [r for r in study.pretrainings.get(arm, []) if r.history]

    def mean(values: list[float | None]) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    return {"accuracy": mean([r.history[-1].get("val_accuracy") for r in runs]),
            "loss": mean([r.history[-1].get("val_loss") for r in runs]),
            "minutes": mean([r.wall_time_s / 60 if r.wall_time_s is not None else None for r in runs])}


def length_summary(study: Study, summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json's "lengths": {task: {"lengths", "pretext": {epochs: pretext_end}, "fractions": {fraction:
    {"points": [{epochs, gain, ci95, significant, n}], "verdict", "pays"}}}}; empty without a length axis."""
    lengths = study.config.pretrain_lengths
    if not lengths:
        return {}
    q = summary["headline"]["quantity"]
    tasks = dict.fromkeys(pretext_of(a) for a in study.config.pretexts if LENGTH_SUFFIX.match(a))
    out: dict[str, Any] = {}
    for task in tasks:
        entry: dict[str, Any] = {"lengths": list(lengths),
                                 "pretext": {str(n): pretext_end(study, length_arm(task, n)) for n in lengths},
                                 "fractions": {}}
        for f in study.fractions:
            cmp = summary["comparison"].get(fraction_key(f), {})
            points = [{"epochs": n, "gain": c["pretrained_minus_scratch"], "ci95": c["paired_ci95"],
                       "significant": c["significant"], "n": c["paired_n"]}
                      for n in lengths if (c := cmp.get(length_arm(task, n), {}).get(q))]
            if points:
                entry["fractions"][fraction_key(f)] = {"points": points, **length_verdict(points)}
        out[task] = entry
    return out


def length_sentences(lengths: dict[str, Any], metric: str) -> list[str]:
    """One plain sentence per pretext task and label fraction: the gain at each length, the call, the cost."""
    out = []
    for task, entry in lengths.items():
        ends = [entry["pretext"][str(n)] for n in entry["lengths"]]
        key = "accuracy" if any(e["accuracy"] is not None for e in ends) else "loss"
        cost = (f"pretraining {', '.join(map(str, entry['lengths']))} epochs took "
                + ", ".join(f"{e['minutes']:.1f}" if e["minutes"] is not None else "?" for e in ends)
                + f" min; its held-out pretext {key} at the end: "
                + ", ".join(number(e[key], "metric") for e in ends) + ".")
        for f, e in entry["fractions"].items():
            gains = "; ".join(
                f"{number(p['gain'], 'metric', True)}"
                + (f" [{number(p['ci95'][0], 'metric', True)}, {number(p['ci95'][1], 'metric', True)}]"
                   if p["ci95"] else "") + f" after {p['epochs']} epochs" for p in e["points"])
            call = {"no gain": "no length gains over scratch",
                    "saturated": f"saturated: {e['pays']} epochs already reach the best gain's interval",
                    "still rising": f"still rising: only the longest, {e['pays']} epochs, reaches the best gain"
                    }.get(e["verdict"], "not decided yet")
            out.append(f"**{task}, {float(f):.0%} of the labels**: {metric} gain over scratch {gains}: {call}.")
        out.append(f"**{task}**: {cost}")
    return out
