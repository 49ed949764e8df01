"""Per-run curve facts and the comparisons every other module builds on: `compare` (pretrained minus scratch,
paired by seed), `run_curves` (summary.json runs[run]["curves"]: a run's length against its budget, its plateau
or stop) and summary.json's "trend" (how the gain changes from one label fraction to the next). The four
questions themselves are answers.py's.

"trend": {<pretext arm>: {"quantity": str, "verdict": "grows" | "shrinks" | null,
    "changes": [{"from": fraction, "to": fraction, "difference", "std", "n", "ci95", "significant"}]}}
    # the per-seed change of the gain (pretrained minus scratch) from one fraction to the next smaller one
"""

from __future__ import annotations

import statistics
from typing import Any

from ..layout import SCRATCH
from ..stats import mean_ci, paired_difference
from .results import Run
from .rules import last_improvement, plateau, trend

PLATEAU_SCHEDULE = "plateau"


def compare(scratch: dict[int, float], pretrained: dict[int, float]) -> dict[str, Any]:
    """Pretrained minus scratch for one quantity, given {seed: value} of each arm.

    The difference is paired over the seeds both arms have, so it is the centre of its interval even
    while one arm has more finished seeds than the other (the means then cover different seeds).
    """
    a, b = statistics.fmean(scratch.values()), statistics.fmean(pretrained.values())
    paired = (paired_difference(scratch, pretrained) if set(scratch) & set(pretrained)
              else {"difference": b - a, "std": None, "n": 0, "ci95": None, "significant": None})
    return {"scratch": a, "pretrained": b, "pretrained_minus_scratch": paired["difference"],
            "paired_std": paired["std"], "paired_ci95": paired["ci95"], "significant": paired["significant"],
            "n_seeds": [len(scratch), len(pretrained)], "paired_n": paired["n"]}


def run_curves(run: Run) -> dict[str, Any]:
    """A finished run's length against its budget and the rules that need one run only (summary.json's
    runs[run]["curves"])."""
    last, steps = run.history[-1], run.steps
    budget = run.budget or steps
    f1 = run.curve(run.scoring.column)  # the task's primary metric (macro-F1, mean IoU)
    final = run.summary.final or {}
    out: dict[str, Any] = {
        "schedule": run.schedule, "budget": budget, "steps": steps, "stopped_early": run.stopped_early,
        "patience": run.patience, "evaluations": len(run.history),
        "steps_known": "step" in last or run.steps_per_epoch is not None, "wall_time_s": run.wall_time_s,
        "final_metric": final.get(run.scoring.primary, last.get(run.scoring.column)),
        "plateau": None, "last_improvement": None}
    if f1 and run.schedule == PLATEAU_SCHEDULE:
        out["last_improvement"] = last_improvement(f1)
    elif f1:
        out["plateau"] = plateau(f1, budget)
    return out


def trend_summary(by_seed: dict[str, dict[str, dict[str, dict[int, float]]]], quantity: str) -> dict[str, Any]:
    """summary.json's "trend": per pretrained arm, the per-seed change of its gain over scratch on `quantity`
    from each fraction to the next smaller one, and rules.trend's verdict on those changes.
    by_seed: fraction -> arm -> quantity -> seed -> value."""
    out: dict[str, Any] = {}
    arms = dict.fromkeys(a for arms in by_seed.values() for a in arms if a != SCRATCH)
    for arm in arms:
        gains = {}
        for f in sorted(by_seed, key=float, reverse=True):  # most labels first
            a, b = by_seed[f].get(SCRATCH, {}).get(quantity, {}), by_seed[f].get(arm, {}).get(quantity, {})
            if set(a) & set(b):
                gains[f] = {s: b[s] - a[s] for s in set(a) & set(b)}
        changes = []
        for (fa, ga), (fb, gb) in zip(list(gains.items()), list(gains.items())[1:]):
            seeds = sorted(set(ga) & set(gb))
            if not seeds:
                continue
            mean, std, ci = mean_ci([gb[s] - ga[s] for s in seeds])
            changes.append({"from": fa, "to": fb, "difference": mean, "std": std, "n": len(seeds),
                            "ci95": list(ci) if ci else None,
                            "significant": None if ci is None else ci[0] > 0 or ci[1] < 0})
        out[arm] = {"quantity": quantity, "changes": changes,
                    "verdict": trend([(c["difference"], c["significant"]) for c in changes])}
    return out
