"""The homework's four questions at one label fraction, a pretrained network against scratch, answered from the
curves the figures draw: how fast the losses fell, how fast validation macro-F1 rose, which network reached a
plateau first, and the best values (final and highest). summary.json "answers" holds every number a sentence
quotes, per seed and over seeds, so a reader can redo each verdict from the runs' CSV files.

"answers": {fraction: {<pretext arm>: {
    "seeds": [int], "budget": float, "schedule": str | null, "stable_end": float | null, "spacing": float,
    "kept": "best" | null,   # "best": early stopping kept each run's best evaluation (the plateau schedule)
    "by_seed": {seed: {"train_loss" | "val_loss" | "metric": rules.level_steps, "plateau": {"scratch",
                "pretrained": plateau_of, "first": verdict}, "end": {arm: {"final", "max", "max_step", "test"}}}},
    "over_seeds": {"train_loss" | "val_loss" | "metric": {"start", "end", "levels": [{"share", "level",
                   "scratch", "pretrained": mean step | null, "reached": {arm: int}, "difference": comparison | null,
                   "verdict"}], "ahead": {who: mean share}},
                   "plateau": {arm: {"reached": int, "step": mean | null}, "difference": comparison | null,
                               "verdict", "first": {verdict: count}},
                   "end": {"final" | "max" | "test": comparison, "max_step": {arm: mean}}}}}}
A verdict is "pretrained", "scratch", "same" (at most one evaluation apart, or a value difference inside the
tie), "unclear" (several seeds whose paired 95% interval includes 0) or "neither" (not reached).
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from ..layout import SCRATCH
from .dynamics import compare
from .formatting import number
from .render import md
from .results import Run, Study, fraction_key
from .rules import (
    EPS,
    EQUAL_WITHIN,
    PLATEAU_GAIN,
    PLATEAU_WAIT,
    last_improvement,
    level_steps,
    plateau,
    sooner,
    stable_plateau,
    verdict,
)

ARMS = ("scratch", "pretrained")
CURVES = {"train_loss": "Training loss", "val_loss": "Validation loss"}  # and "metric": the task's primary
DECAYING = {"onecycle": "one-cycle (the rate rises, then falls to zero)",
            "cosine": "cosine (the rate falls to zero along a cosine)"}


def spacing(run: Run) -> float:
    """The steps between two evaluations (the median gap): a time is known to this precision only."""
    steps = [s for s, _ in run.curve(run.scoring.column)]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    return float(statistics.median(gaps)) if gaps else float(run.steps)


def stable_end(run: Run) -> float | None:
    """The step at which the learning rate starts to fall for good: wsd's decay, a constant rate's end; None
    for schedules that decay all along (one-cycle, cosine) and for the plateau schedule (it stops instead)."""
    budget = run.budget or run.steps
    if run.schedule == "wsd" and run.config.cooldown is not None:
        return budget - int(budget * run.config.cooldown)  # as train.stable_end counts it
    return budget if run.schedule == "constant" else None


def plateau_of(run: Run) -> dict[str, Any]:
    """Question 3 for one run, by the rule its schedule allows (see the module's rules)."""
    curve = run.curve(run.scoring.column)
    if not curve:
        return {"state": "short", "step": None, "rule": "none"}
    if run.schedule == "plateau":  # stopped by patience: the plateau is the best that was not beaten
        return ({"state": "plateau", "step": last_improvement(curve), "rule": "stopped"} if run.stopped_early
                else {"state": "rising", "step": None, "rule": "stopped"})
    end = stable_end(run)
    if end is not None:
        return {**stable_plateau(curve, run.steps, end), "rule": "stable", "until": end}
    return {**plateau(curve, run.budget or run.steps), "rule": "decaying"}


def end_values(run: Run) -> dict[str, float | None]:
    """Question 4 for one run: the final (kept) model's validation score (the task's primary metric), the highest
    over training with its step, and the kept model's test score where the study has a test split."""
    key = run.scoring.primary
    best = run.best.get(key)
    final = (run.summary.final or {}).get(key) if run.summary else None
    return {"final": final if final is not None else run.curve(run.scoring.column)[-1][1],
            "max": best.value if best else None, "max_step": best.step if best else None,
            "test": (run.summary.test or {}).get(key) if run.summary else None}


def pair_answers(scratch: Run, pretrained: Run) -> dict[str, Any]:
    """Every rule on one seed's scratch and pretrained runs (the "by_seed" entry)."""
    gap = spacing(scratch)
    out: dict[str, Any] = {}
    for key, a, b, lower in (("train_loss", scratch.loss_curve(), pretrained.loss_curve(), True),
                             ("val_loss", scratch.curve("val_loss"), pretrained.curve("val_loss"), True),
                             ("metric", scratch.curve(scratch.scoring.column), pretrained.curve(scratch.scoring.column),
                              False)):
        if a and b:
            out[key] = level_steps(a, b, lower, gap)
    p = {"scratch": plateau_of(scratch), "pretrained": plateau_of(pretrained)}
    out["plateau"] = {**p, "first": sooner(p["scratch"]["step"], p["pretrained"]["step"], 1.0, same=gap)}
    out["end"] = {"scratch": end_values(scratch), "pretrained": end_values(pretrained)}
    return out


def step_verdict(c: dict[str, Any] | None, gap: float) -> str:
    """Pretrained minus scratch steps over seeds: "same" within one evaluation, "unclear" when several seeds'
    95% interval includes 0, else the network that got there sooner."""
    if c is None:
        return "neither"
    diff = c["pretrained_minus_scratch"]
    if abs(diff) <= gap + EPS:
        return "same"
    if c["paired_n"] > 1 and (c["paired_ci95"] is None or c["paired_ci95"][0] <= 0 <= c["paired_ci95"][1]):
        return "unclear"
    return "pretrained" if diff < 0 else "scratch"


def value_verdict(c: dict[str, Any]) -> str:
    """Pretrained minus scratch of a metric: with several seeds called when its 95% interval excludes 0, with
    one when it exceeds EQUAL_WITHIN."""
    diff = c["pretrained_minus_scratch"]
    if c["paired_n"] > 1 and c["paired_ci95"] is not None:
        lo, hi = c["paired_ci95"]
        if lo == hi == 0:  # every seed's difference is exactly 0: equal, not a spread
            return "same"
        return "unclear" if lo <= 0 <= hi else ("pretrained" if diff > 0 else "scratch")
    v = verdict(diff, False, EQUAL_WITHIN + EPS)
    return "same" if v == "equal" else v


def _levels_over_seeds(rs: dict[int, dict[str, Any]], gap: float) -> dict[str, Any]:
    first = next(iter(rs.values()))
    levels = []
    for i, lv in enumerate(first["levels"]):  # a level's mean step per network is over the seeds that reached it
        per = {s: r["levels"][i] for s, r in rs.items()}
        both = {s: x for s, x in per.items() if x["scratch_step"] is not None and x["pretrained_step"] is not None}
        c = compare({s: x["scratch_step"] for s, x in both.items()},
                    {s: x["pretrained_step"] for s, x in both.items()}) if len(both) == len(per) else None
        reached = {arm: [x[f"{arm}_step"] for x in per.values() if x[f"{arm}_step"] is not None] for arm in ARMS}
        counts = {arm: len(v) for arm, v in reached.items()}
        verdict = step_verdict(c, gap) if c else (
            "neither" if not any(counts.values()) else
            "pretrained" if counts["pretrained"] > counts["scratch"] else
            "scratch" if counts["scratch"] > counts["pretrained"] else "unclear")
        levels.append({"share": lv["share"], "level": statistics.fmean(x["level"] for x in per.values()),
                       **{arm: statistics.fmean(v) if v else None for arm, v in reached.items()},
                       "reached": counts, "difference": c, "verdict": verdict})
    return {"start": statistics.fmean(r["start"] for r in rs.values()),
            "end": statistics.fmean(r["end"] for r in rs.values()), "levels": levels,
            "ahead": {w: statistics.fmean(r["ahead"][w] for r in rs.values()) for w in first["ahead"]}}


def over_seeds(by_seed: dict[int, dict[str, Any]], gap: float) -> dict[str, Any]:
    """Every rule's result over the seeds (the "over_seeds" entry)."""
    out: dict[str, Any] = {}
    for key in (*CURVES, "metric"):
        rs = {s: r[key] for s, r in by_seed.items() if key in r}
        out[key] = _levels_over_seeds(rs, gap) if rs else None
    ps = {s: r["plateau"] for s, r in by_seed.items()}
    arms = {arm: [p[arm]["step"] for p in ps.values() if p[arm]["step"] is not None] for arm in ARMS}
    both = {s: p for s, p in ps.items() if None not in (p["scratch"]["step"], p["pretrained"]["step"])}
    c = compare({s: p["scratch"]["step"] for s, p in both.items()},
                {s: p["pretrained"]["step"] for s, p in both.items()}) if both else None
    out["plateau"] = {**{arm: {"reached": len(v), "step": statistics.fmean(v) if v else None}
                         for arm, v in arms.items()},
                      "difference": c, "verdict": step_verdict(c, gap) if len(both) == len(ps) else "neither",
                      "first": dict(Counter(p["first"] for p in ps.values()))}
    ends = {s: r["end"] for s, r in by_seed.items()}
    out["end"] = {q: compare({s: e["scratch"][q] for s, e in ends.items()},
                             {s: e["pretrained"][q] for s, e in ends.items()})
                  for q in ("final", "max", "test") if all(e[a][q] is not None for e in ends.values() for a in ARMS)}
    if "max" in out["end"]:
        out["end"]["max_step"] = {a: statistics.fmean(e[a]["max_step"] for e in ends.values()) for a in ARMS}
    return out


def answers_summary(study: Study) -> dict[str, Any]:
    """summary.json's "answers": for every fraction and pretrained arm, the rules per seed and over seeds."""
    out: dict[str, Any] = {}
    for f in study.fractions:
        scratch = {r.seed: r for r in study.finished(f, SCRATCH)}
        for arm in (a for a in study.arms if a != SCRATCH):
            pairs = {r.seed: (scratch[r.seed], r) for r in study.finished(f, arm) if r.seed in scratch}
            if not pairs:
                continue
            first = pairs[min(pairs)][0]
            gap = spacing(first)
            by_seed = {seed: pair_answers(*runs) for seed, runs in sorted(pairs.items())}
            out.setdefault(fraction_key(f), {})[arm] = {
                "seeds": sorted(pairs), "budget": first.budget or first.steps, "schedule": first.schedule,
                "stable_end": stable_end(first), "spacing": gap, "kept": first.summary.kept, "by_seed": by_seed,
                "metric": first.scoring.primary, "metric_name": first.scoring.name,
                "over_seeds": over_seeds(by_seed, gap)}
    return out


# ---------------------------------------------------------------------------------------------------------
# The sentences: short, plain, every number from the entry above.


def _step(x: float | None) -> str:
    return "never" if x is None else f"step {round(x)}"


def _who(v: str, arm: str) -> str:
    return {"pretrained": f"the {arm}-pretrained network", "scratch": "scratch"}[v]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _levels_phrase(levels: list[dict[str, Any]], arm: str, gap: float) -> str:
    """Who got to each level first, levels with the same verdict grouped: "context got there first at 25% and
    50% of the way, tied at 75% and 90%"."""
    groups: dict[str, list[str]] = {}
    for lv in levels:
        groups.setdefault(lv["verdict"], []).append(f"{lv['share']:.0%}")
    if set(groups) == {"same"}:
        return f"both got to every level within one evaluation ({gap:g} steps) of each other: equally fast"
    if len(groups) == 1 and next(iter(groups)) in ("pretrained", "scratch"):
        return f"{arm if 'pretrained' in groups else 'scratch'} got to every level first"
    words = {"pretrained": f"{arm} got there first at {{}}", "scratch": "scratch got there first at {}",
             "same": f"tied (at most one evaluation, {gap:g} steps, apart) at {{}}",
             "unclear": "no clear winner (the seeds disagree) at {}", "neither": "neither got to {}"}
    return ", ".join(words[v].format(_and(g)) for v, g in groups.items()) + " of the way"


def curve_sentence(o: dict[str, Any], key: str, arm: str, gap: float, n: int, metric: str = "macro-F1") -> str:
    """How fast one curve moved: who got to each level first, two levels with their steps, and who was ahead
    for how much of training. metric: the validation metric's name (the task's primary)."""
    name, verb = CURVES.get(key, f"Validation {metric}"), "fell" if key != "metric" else "rose"
    shown = []
    for lv in (o["levels"][1], o["levels"][-1]):
        ratio = ""
        if lv["difference"] and lv["pretrained"] and lv["scratch"]:  # both reached it in every seed
            ratio = (f", {lv['scratch'] / lv['pretrained']:.1f}x sooner" if lv["verdict"] == "pretrained" else
                     f", {lv['pretrained'] / lv['scratch']:.1f}x sooner for scratch" if lv["verdict"] == "scratch"
                     else "")
        counts = lv["reached"]
        steps = (f"{arm} at {_step(lv['pretrained'])}, scratch at {_step(lv['scratch'])}{ratio}" if lv["difference"]
                 else f"{arm} {_reached(lv['pretrained'], counts['pretrained'], n)}, scratch "
                      f"{_reached(lv['scratch'], counts['scratch'], n)}")
        where = "halfway" if lv["share"] == 0.5 else f"{lv['share']:.0%} of the way"
        shown.append(f"{where} ({_value(lv['level'])}): {steps}")
    ahead, better = o["ahead"], "higher" if key == "metric" else "lower"
    text = "; ".join(shown)
    return (f"{name} {verb} from {_value(o['start'])} to {_value(o['end'])}: "
            f"{_levels_phrase(o['levels'], arm, gap)}. {text[:1].upper()}{text[1:]}. The {arm} curve was {better} "
            f"for {ahead['pretrained']:.0%} of the steps, scratch's for {ahead['scratch']:.0%}.")


def _value(x: float) -> str:
    """A curve's level in a sentence: three decimals are what the figures resolve."""
    return f"{x:.3f}"


def _reached(step: float | None, k: int, n: int) -> str:
    """A mean step over the k of n seeds that got there: "at step 120 (2 of 3 seeds)", or "never got there"."""
    return "never got there" if step is None else f"at {_step(step)}" + (f" ({k} of {n} seeds)" if n > 1 else "")


def plateau_sentence(entry: dict[str, Any], arm: str) -> str:
    """Which network reached its plateau first, or why neither did."""
    o, n, gap = entry["over_seeds"]["plateau"], len(entry["seeds"]), entry["spacing"]
    metric = entry.get("metric_name", "macro-F1")
    rule = next(iter(entry["by_seed"].values()))["plateau"]["scratch"]["rule"]
    names = {"pretrained": arm, "scratch": "scratch"}
    if rule == "decaying":
        why = DECAYING.get(entry["schedule"] or "", f"the {entry['schedule']} schedule")
        reached = [names[a] for a in ARMS if o[a]["reached"]]
        return ("Not answerable from this run: under " + why + " the flattening at the end is the "
                "schedule's, not the network's" + (f" ({' and '.join(reached)} stayed flat over the last 20% in "
                                                  "some seeds)" if reached else "")
                + ". Run a study with a constant phase (the default wsd schedule) to answer it.")
    where = (f" before the learning rate started to fall at step {number(entry['stable_end'], 'step')}"
             if rule == "stable" else " (the plateau schedule stopped each run after it)")

    def arm_text(a: str) -> str:
        x = o[a]
        if not x["reached"]:
            return f"{names[a]} never reached one{where}"
        of = f", {x['reached']} of {n} seeds" if n > 1 else ""
        return f"{names[a]} at {_step(x['step'])}{of}"

    v = o["verdict"]
    rule_text = (f"its best validation {metric} not beaten by more than {PLATEAU_GAIN} for {PLATEAU_WAIT:.0%} "
                 "of the run" if rule == "stable" else "its last new best before patience ran out")
    if v in ("pretrained", "scratch"):
        who = _who(v, arm)
        head = f"{who[:1].upper()}{who[1:]} reached its plateau first"
    elif v == "same":
        head = f"Both reached their plateau at about the same step (within one evaluation, {gap:g} steps)"
    elif v == "unclear":
        firsts = {names[k]: c for k, c in o["first"].items() if k in names}
        head = ("Both reached a plateau, in no clear order ("
                + ", ".join(f"{k} first in {c} of {n} seeds" for k, c in firsts.items()) + ")")
    elif o["scratch"]["reached"] or o["pretrained"]["reached"]:
        more = max(ARMS, key=lambda a: o[a]["reached"])
        head = (f"Only {names[more]} reached a plateau{where}" if not o[other(more)]["reached"]
                else "A plateau was reached in some seeds only")
    else:
        return (f"Neither network reached a plateau{where}: validation {metric} was still improving by more "
                f"than {PLATEAU_GAIN} within the last {PLATEAU_WAIT:.0%} of the run.")
    return f"{head}: {arm_text('pretrained')}; {arm_text('scratch')} (the plateau: {rule_text})."


def other(arm: str) -> str:
    return "scratch" if arm == "pretrained" else "pretrained"


def best_sentence(entry: dict[str, Any], arm: str) -> str:
    """The best values: the final (kept) model's and the highest during training, with the test score."""
    o, n, metric = entry["over_seeds"]["end"], len(entry["seeds"]), entry.get("metric_name", "macro-F1")
    kept = "kept (best) model" if entry.get("kept") == "best" else "final model"

    def diff(c: dict[str, Any]) -> str:
        d = number(c["pretrained_minus_scratch"], "metric", True)
        v = value_verdict(c)
        if c["paired_n"] > 1 and c["paired_ci95"] is not None:
            lo, hi = (number(x, "metric", True) for x in c["paired_ci95"])
            judged = ("within the spread between seeds" if v == "unclear" else "equal in every seed" if v == "same" else
                      f"higher for {arm if v == 'pretrained' else 'scratch'}")
            wide = "; two seeds give a wide interval" if c["paired_n"] == 2 else ""
            return f"{d} for {arm}, {judged} (95% interval {lo} to {hi}{wide})"
        return f"{d} for {arm}" + (", about equal" if v == "same" else "")

    c, text = o["final"], f"{'Means over ' + str(n) + ' seeds: o' if n > 1 else 'O'}"
    if "test" in o:  # the claim is the kept model's test score; validation chose nothing of it
        t = o["test"]
        text += (f"n the test split (never used for any choice) the {kept}'s {metric} is "
                 f"{number(t['pretrained'], 'metric')} with {arm} pretraining vs {number(t['scratch'], 'metric')} from "
                 f"scratch: {diff(t)}. On validation it is {number(c['pretrained'], 'metric')} vs "
                 f"{number(c['scratch'], 'metric')}")
    else:
        text += (f"n validation the {kept}'s {metric} is {number(c['pretrained'], 'metric')} with {arm} "
                 f"pretraining vs {number(c['scratch'], 'metric')} from scratch: {diff(c)}")
    if "max" in o:
        m, at = o["max"], o["max_step"]
        text += (f". The highest value during training was {number(m['pretrained'], 'metric')} ({arm}, at "
                 f"{_step(at['pretrained'])}) vs {number(m['scratch'], 'metric')} (scratch, at {_step(at['scratch'])})")
    return text + "."


def fraction_answers(summary: dict[str, Any], fraction: str, arm: str) -> list[tuple[str, str]]:
    """The four answers at one fraction, `arm` vs scratch, as (question, sentence) pairs."""
    entry = (summary.get("answers") or {}).get(fraction, {}).get(arm)
    if not entry:
        return []
    o, n, gap, name = entry["over_seeds"], len(entry["seeds"]), entry["spacing"], md(arm)
    metric = entry.get("metric_name", "macro-F1")
    losses = " ".join(curve_sentence(o[k], k, name, gap, n) for k in ("train_loss", "val_loss") if o[k])
    return [("How fast the losses fell", losses),
            (f"How fast validation {metric} rose", curve_sentence(o["metric"], "metric", name, gap, n, metric)
             if o["metric"] else "No validation curve."),
            ("Which network reached a plateau first", plateau_sentence(entry, name)),
            ("Best values", best_sentence(entry, name))]
