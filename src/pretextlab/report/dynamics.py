"""How the curves moved: the rules of rules.py applied per run and per seed to scratch and each pretrained arm,
and their results over seeds (pretrained minus scratch, paired by seed): summary.json's "dynamics" and "trend".

Four questions per label fraction and pretrained arm: how fast each loss fell (steps to a common level), how
fast validation macro-F1 rose (steps to 95% of scratch's final macro-F1, and the area under the curve), which
arm plateaued first (decaying schedules: the plateau rule; the plateau schedule: which run stopped first), and
which ended higher (the report's headline quantity, in summary.json's "comparison"). Steps are optimizer steps.

"dynamics": {fraction: {<pretext arm>: {
    "seeds": [int],                      # seeds where both arms finished: the pairs
    "schedule": str | null, "budget": float, "patience": int | null,  # the scratch run's (of the first pair)
    "steps_known": bool,                 # false: a run without step column nor steps_per_epoch (x = epochs)
    "by_seed": {seed: {
        "budget": float,
        "train_loss": {"level", "slower": "scratch" | "pretrained", "scratch_step", "pretrained_step",
                       "speedup", "sooner"},          # rules.loss_speed on the smoothed curves; null step: never
        "val_loss": {...the same},
        "f1": {"target", "scratch_final", "scratch_step", "pretrained_step", "speedup", "sooner"},
        "area": {"scratch": float, "pretrained": float},
        "end": {quantity: {"scratch": float, "pretrained": float}},   # final_f1_macro, test_f1_macro, and the
                                                                      # best evaluation's f1_macro, f1_macro_step
        "plateau": {"scratch": {"state", "step", "rise"}, "pretrained": {...}, "first": str} | null,
        "stop": {"scratch": {"steps", "stopped_early", "wall_time_s", "last_improvement"}, "pretrained": {...},
                 "first": str} | null}},   # plateau: schedules other than "plateau"; stop: the plateau schedule
    "over_seeds": {
        "train_loss" | "val_loss" | "f1": {"n": int, "reached": {"scratch": int, "pretrained": int},
            "level" | "target": describe, "steps": comparison | null,   # over the seeds where both reached it
            "speedup": describe | null, "sooner": {verdict: count}},
        "area": comparison, "end": {quantity: comparison},   # over the pairs' seeds only
        "plateau": {"states": {arm: {state: count}}, "steps": comparison | null, "rise": comparison,
                    "first": {verdict: count}} | null,
        "stop": {"steps": comparison, "wall_time_s": comparison, "stopped_early": {arm: int},
                 "first": {verdict: count}} | null}}}}
where sooner/first is one of "pretrained", "scratch", "same", "neither", describe is stats.describe and a
comparison is `compare`'s dict.

"trend": {<pretext arm>: {"quantity": str, "verdict": "grows" | "shrinks" | null,
    "changes": [{"from": fraction, "to": fraction, "difference", "std", "n", "ci95", "significant"}]}}
    # the per-seed change of the gain (pretrained minus scratch) from one fraction to the next smaller one
"""

from __future__ import annotations

import statistics
from typing import Any

from ..layout import SCRATCH
from ..stats import describe, mean_ci, paired_difference
from .results import Run, Study, fraction_key
from .rules import (
    SMOOTH_SPAN,
    last_improvement,
    loss_speed,
    metric_speed,
    normalised_area,
    plateau,
    smooth,
    sooner,
    trend,
)

PLATEAU_SCHEDULE = "plateau"
ARMS = ("scratch", "pretrained")
END = {  # summary.json's quantities of the pair's end of training (and the secondary best evaluation)
    "final_f1_macro": lambda run: (run.summary.final or {}).get("f1_macro"),
    "test_f1_macro": lambda run: (run.summary.test or {}).get("f1_macro"),
    "f1_macro": lambda run: best.value if (best := run.best.get("f1_macro")) else None,
    "f1_macro_step": lambda run: best.step if (best := run.best.get("f1_macro")) else None,
}


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
    f1 = run.curve("val_f1_macro")
    final = run.summary.final or {}
    out: dict[str, Any] = {
        "schedule": run.schedule, "budget": budget, "steps": steps, "stopped_early": run.stopped_early,
        "patience": run.patience, "evaluations": len(run.history),
        "steps_known": "step" in last or run.steps_per_epoch is not None, "wall_time_s": run.wall_time_s,
        "final_f1": final.get("f1_macro", last.get("val_f1_macro")),
        "area_f1": normalised_area(f1, budget) if f1 else None, "plateau": None, "last_improvement": None}
    if f1 and run.schedule == PLATEAU_SCHEDULE:
        out["last_improvement"] = last_improvement(f1)
    elif f1:
        out["plateau"] = plateau(f1, budget)
    return out


def pair_rules(scratch: Run, pretrained: Run) -> dict[str, Any]:
    """Every rule on one seed's scratch and pretrained runs (the "by_seed" entry)."""
    cs, cp = run_curves(scratch), run_curves(pretrained)
    budget = cs["budget"]
    out: dict[str, Any] = {"budget": budget}
    for key in ("train_loss", "val_loss"):
        a, b = scratch.curve(key), pretrained.curve(key)
        if a and b:
            r = loss_speed(smooth(a, SMOOTH_SPAN * budget), smooth(b, SMOOTH_SPAN * budget))
            out[key] = {**r, "sooner": sooner(r["scratch_step"], r["pretrained_step"], budget)}
    a, b = scratch.curve("val_f1_macro"), pretrained.curve("val_f1_macro")
    if a and b and cs["final_f1"] is not None:
        r = metric_speed(a, b, cs["final_f1"])
        out["f1"] = {**r, "scratch_final": cs["final_f1"],
                     "sooner": sooner(r["scratch_step"], r["pretrained_step"], budget)}
    out["area"] = {"scratch": cs["area_f1"], "pretrained": cp["area_f1"]}
    out["end"] = {q: {arm: value(run) for arm, run in zip(ARMS, (scratch, pretrained))} for q, value in END.items()
                  if all(value(run) is not None for run in (scratch, pretrained))}
    out["plateau"] = out["stop"] = None
    if cs["schedule"] == PLATEAU_SCHEDULE:
        out["stop"] = {arm: {k: c[k] for k in ("steps", "stopped_early", "wall_time_s", "last_improvement")}
                       for arm, c in zip(ARMS, (cs, cp))}
        out["stop"]["first"] = sooner(cs["steps"], cp["steps"], budget)
    elif cs["plateau"] and cp["plateau"]:
        out["plateau"] = {"scratch": cs["plateau"], "pretrained": cp["plateau"],
                          "first": sooner(cs["plateau"]["step"], cp["plateau"]["step"], budget)}
    return out


def _counts(values: list[str]) -> dict[str, int]:
    return {v: values.count(v) for v in dict.fromkeys(values)}


def _speed_over_seeds(by_seed: dict[int, dict[str, Any]], key: str) -> dict[str, Any] | None:
    """A speed rule (train_loss, val_loss, f1) over seeds: how many reached the level, and the paired
    difference of the steps over the seeds where both arms reached it."""
    rs = {seed: r[key] for seed, r in by_seed.items() if r.get(key)}
    if not rs:
        return None
    both = {seed: r for seed, r in rs.items() if r["scratch_step"] is not None and r["pretrained_step"] is not None}
    level = "target" if key == "f1" else "level"
    return {"n": len(rs), "reached": {arm: sum(r[f"{arm}_step"] is not None for r in rs.values()) for arm in ARMS},
            level: describe([r[level] for r in rs.values()]),
            "steps": compare({s: r["scratch_step"] for s, r in both.items()},
                             {s: r["pretrained_step"] for s, r in both.items()}) if both else None,
            "speedup": describe([r["speedup"] for r in both.values() if r["speedup"] is not None]) if both else None,
            "sooner": _counts([r["sooner"] for r in rs.values()])}


def over_seeds(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Every rule's result over the seeds (the "over_seeds" entry)."""
    out: dict[str, Any] = {key: _speed_over_seeds(by_seed, key) for key in ("train_loss", "val_loss", "f1")}
    areas = {s: r["area"] for s, r in by_seed.items() if None not in r["area"].values()}
    out["area"] = compare({s: a["scratch"] for s, a in areas.items()},
                          {s: a["pretrained"] for s, a in areas.items()}) if areas else None
    out["end"] = {q: compare({s: r["end"][q]["scratch"] for s, r in by_seed.items() if q in r["end"]},
                             {s: r["end"][q]["pretrained"] for s, r in by_seed.items() if q in r["end"]})
                  for q in END if any(q in r["end"] for r in by_seed.values())}
    out["plateau"] = out["stop"] = None
    plateaus = {s: r["plateau"] for s, r in by_seed.items() if r["plateau"]}
    if plateaus:
        both = {s: p for s, p in plateaus.items() if p["scratch"]["step"] is not None
                and p["pretrained"]["step"] is not None}
        rises = {s: p for s, p in plateaus.items() if None not in (p["scratch"]["rise"], p["pretrained"]["rise"])}
        out["plateau"] = {
            "states": {arm: _counts([p[arm]["state"] for p in plateaus.values()]) for arm in ARMS},
            "steps": compare({s: p["scratch"]["step"] for s, p in both.items()},
                             {s: p["pretrained"]["step"] for s, p in both.items()}) if both else None,
            "rise": compare({s: p["scratch"]["rise"] for s, p in rises.items()},
                            {s: p["pretrained"]["rise"] for s, p in rises.items()}) if rises else None,
            "first": _counts([p["first"] for p in plateaus.values()])}
    stops = {s: r["stop"] for s, r in by_seed.items() if r["stop"]}
    if stops:
        walls = {s: st for s, st in stops.items() if None not in (st["scratch"]["wall_time_s"],
                                                                   st["pretrained"]["wall_time_s"])}
        out["stop"] = {
            "steps": compare({s: st["scratch"]["steps"] for s, st in stops.items()},
                             {s: st["pretrained"]["steps"] for s, st in stops.items()}),
            "wall_time_s": compare({s: st["scratch"]["wall_time_s"] for s, st in walls.items()},
                                   {s: st["pretrained"]["wall_time_s"] for s, st in walls.items()}) if walls else None,
            "stopped_early": {arm: sum(bool(st[arm]["stopped_early"]) for st in stops.values()) for arm in ARMS},
            "first": _counts([st["first"] for st in stops.values()])}
    return out


def dynamics_summary(study: Study) -> dict[str, Any]:
    """summary.json's "dynamics": for every fraction and pretrained arm, the rules per seed and over seeds."""
    out: dict[str, Any] = {}
    for f in study.fractions:
        scratch = {r.seed: r for r in study.finished(f, SCRATCH)}
        for arm in (a for a in study.arms if a != SCRATCH):
            pairs = {r.seed: (scratch[r.seed], r) for r in study.finished(f, arm) if r.seed in scratch}
            if not pairs:
                continue
            by_seed = {seed: pair_rules(*runs) for seed, runs in sorted(pairs.items())}
            first = pairs[min(pairs)][0]
            out.setdefault(fraction_key(f), {})[arm] = {
                "seeds": sorted(pairs), "schedule": first.schedule, "budget": by_seed[min(pairs)]["budget"],
                "patience": first.patience,
                "steps_known": run_curves(first)["steps_known"], "by_seed": by_seed, "over_seeds": over_seeds(by_seed)}
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
