"""The four questions at one label fraction, pretrained arm vs scratch, in sentences: how fast each loss fell,
how fast validation macro-F1 rose, which arm plateaued (or, under the plateau schedule, stopped) first, and
which ended higher on the primary protocol. Phrased from summary.json's "dynamics" and "comparison", claiming
nothing they do not show: with several seeds a difference is called only when its paired 95% interval excludes
0; with one seed the numbers are observations, "about equal" within the rules' ties.
"""

from __future__ import annotations

from typing import Any

from .formatting import at_step, duration, interval, number
from .render import md
from .rules import EQUAL_WITHIN, PLATEAU_SPAN, PLATEAU_TOL, SAME_SPEED, TARGET_FRACTION, verdict

LOSSES = {"train_loss": "Training loss", "val_loss": "Validation loss"}
LAST = f"over the last {PLATEAU_SPAN:.0%} of the budget"


def fraction_conclusions(summary: dict[str, Any], fraction: str, arm: str) -> list[str]:
    """The four questions at one fraction, `arm` vs scratch: how fast each loss fell, how fast macro-F1 rose,
    which plateaued (or stopped) first, and which ended higher on the primary protocol."""
    d = (summary.get("dynamics") or {}).get(fraction, {}).get(arm)
    out: list[str] = []
    if d:
        who = {"pretrained": md(arm), "scratch": "scratch"}
        out += [t for t in (loss_sentence(d, key, who) for key in LOSSES) if t]
        if d["over_seeds"]["f1"]:
            out.append(rise_sentence(d, who))
        if d["over_seeds"]["stop"]:
            out.append(stop_sentence(d, who))
        elif d["over_seeds"]["plateau"]:
            out.append(plateau_sentence(d, who))
    cmp = (d or {}).get("over_seeds", {}).get("end") or summary["comparison"].get(fraction, {}).get(arm)
    if cmp and summary["headline"]["quantity"] in cmp:
        out.append(best_sentence(cmp, md(arm), summary["headline"]))
    return [_sentence(t) for t in out]


def _one(d: dict[str, Any], key: str) -> dict[str, Any]:
    """The only seed's result of a rule (a one-seed comparison)."""
    return next(iter(d["by_seed"].values()))[key]


def _reach(step: float | None, budget: float) -> str:
    return "never reached it" if step is None else f"at {at_step(step, budget)}"


def _ratio(speedup: float | None, who: dict[str, str]) -> str:
    """": 1.56x fewer steps for rotation" (a speed-up below 1 is one of scratch)."""
    if not speedup:
        return ""
    if speedup >= 1:
        return f": {speedup:.2f}x fewer steps for {who['pretrained']}"
    return f": {1 / speedup:.2f}x fewer steps for scratch"


def _mean_ratio(o: dict[str, Any], who: dict[str, str]) -> str:
    """The speed-up over seeds, as the tables give it."""
    if not o["speedup"]:
        return ""
    return f"; speed-up {o['speedup']['mean']:.2f}x (scratch's steps / {who['pretrained']}'s, mean over seeds)"


def _paired(c: dict[str, Any], kind: str = "step", what: str = "paired difference") -> str:
    """"paired difference -84 steps, 95% CI [-120, -48], significant (3 seeds)"."""
    unit = " steps" if kind == "step" else ""
    caution = ", one degree of freedom: read with care" if c["significant"] and c["paired_n"] == 2 else ""
    return (f"{what} {number(c['pretrained_minus_scratch'], kind, True)}{unit}, 95% CI "
            f"{interval(c['paired_ci95'], True, kind)}, {'significant' if c['significant'] else 'not significant'} "
            f"({c['paired_n']} seeds{caution})")


def _winner(c: dict[str, Any], lower_is_better: bool) -> str | None:
    """The arm a significant paired difference favours, else None."""
    if not c or not c.get("significant"):
        return None
    return "pretrained" if (c["pretrained_minus_scratch"] < 0) == lower_is_better else "scratch"


def loss_sentence(d: dict[str, Any], key: str, who: dict[str, str]) -> str | None:
    """How fast a loss fell: the steps each arm took to the common level (rules.loss_speed)."""
    o, budget, name = d["over_seeds"][key], d["budget"], LOSSES[key]
    if o is None:
        return None
    if o["n"] == 1:
        r = _one(d, key)
        level = f"{number(r['level'], 'metric')} ({who[r['slower']]}'s final smoothed level, the higher)"
        steps = (f"{who['pretrained']} {_reach(r['pretrained_step'], budget)}, scratch "
                 f"{_reach(r['scratch_step'], budget)}")
        if r["sooner"] == "same":
            return (f"{name} fell about equally fast: to {level}, {steps} (at most {SAME_SPEED:.0%} of the budget "
                    "apart).")
        if r["sooner"] == "neither":
            return f"{name}: neither arm reached {level}."
        return f"{name} fell faster for {who[r['sooner']]}: to {level}, {steps}{_ratio(r['speedup'], who)}."
    level = f"the common level (mean {number(o['level']['mean'], 'metric')} over seeds)"
    if o["reached"]["scratch"] < o["n"] or o["reached"]["pretrained"] < o["n"]:
        return (f"{name}: {who['pretrained']} reached {level} in {o['reached']['pretrained']} of {o['n']} seeds, "
                f"scratch in {o['reached']['scratch']} of {o['n']}.")
    c = o["steps"]
    numbers = (f"{who['pretrained']} at step {number(c['pretrained'], 'step')} vs scratch at step "
               f"{number(c['scratch'], 'step')} on average ({c['pretrained'] / budget:.0%} vs "
               f"{c['scratch'] / budget:.0%} of the budget){_mean_ratio(o, who)}; {_paired(c)}")
    win = _winner(c, True)
    if win:
        return f"{name} fell faster for {who[win]}: to {level}, {numbers}."
    return f"{name}: no significant difference in how fast it fell to {level}: {numbers}."


def rise_sentence(d: dict[str, Any], who: dict[str, str]) -> str:
    """How fast validation macro-F1 rose: steps to 95% of scratch's final macro-F1, and the normalised area."""
    o, budget, arm = d["over_seeds"]["f1"], d["budget"], who["pretrained"]
    area = d["over_seeds"]["area"]
    area_text = ""
    if area:
        area_text = (f" Normalised area under the macro-F1 curve (its mean over training): "
                     f"{number(area['pretrained'], 'metric')} ({arm}) vs {number(area['scratch'], 'metric')} (scratch)"
                     + (f"; {_paired(area, 'metric')}" if area["paired_ci95"] is not None else "") + ".")
    if o["n"] == 1:
        r = _one(d, "f1")
        target = (f"{number(r['target'], 'metric')} ({TARGET_FRACTION:.0%} of scratch's final validation macro-F1 "
                  f"{number(r['scratch_final'], 'metric')})")
        steps = f"{arm} {_reach(r['pretrained_step'], budget)}, scratch {_reach(r['scratch_step'], budget)}"
        if r["sooner"] == "same":
            head = (f"Validation macro-F1 rose about equally fast: to {target}, {steps} (at most {SAME_SPEED:.0%} of "
                    "the budget apart)")
        elif r["sooner"] == "neither":
            head = f"Validation macro-F1: neither arm reached {target}"
        else:
            head = (f"Validation macro-F1 rose faster for {who[r['sooner']]}: to {target}, "
                    f"{steps}{_ratio(r['speedup'], who)}")
        return head + "." + area_text
    target = (f"{TARGET_FRACTION:.0%} of scratch's final validation macro-F1 (mean target "
              f"{number(o['target']['mean'], 'metric')})")
    if o["reached"]["scratch"] < o["n"] or o["reached"]["pretrained"] < o["n"]:
        return (f"Validation macro-F1: {arm} reached {target} in {o['reached']['pretrained']} of {o['n']} seeds, "
                f"scratch in {o['reached']['scratch']} of {o['n']}." + area_text)
    c = o["steps"]
    numbers = (f"{arm} at step {number(c['pretrained'], 'step')} vs scratch at step {number(c['scratch'], 'step')} on "
               f"average ({c['pretrained'] / budget:.0%} vs {c['scratch'] / budget:.0%} of the budget)"
               f"{_mean_ratio(o, who)}; {_paired(c)}")
    win = _winner(c, True)
    head = (f"Validation macro-F1 rose faster for {who[win]}: to {target}, {numbers}" if win
            else f"Validation macro-F1: no significant difference in how fast it rose to {target}: {numbers}")
    return head + "." + area_text


def _state(p: dict[str, Any], budget: float) -> str:
    """One run's plateau verdict (rules.plateau) in words."""
    if p["state"] == "plateau":
        return f"plateaued at {at_step(p['step'], budget)} and stayed inside a band {PLATEAU_TOL} wide to the end"
    if p["state"] == "rising":
        return f"was still improving at the end ({number(p['rise'], 'metric', True)} {LAST})"
    if p["state"] == "unsettled":
        return (f"had not settled ({number(p['rise'], 'metric', True)} {LAST}, but outside a band {PLATEAU_TOL} "
                "wide)")
    return "had too few evaluations to tell"


def _tally(counts: dict[str, int], n: int) -> str:
    words = {"plateau": "plateaued", "rising": "still improving at the end", "unsettled": "not settled",
             "short": "too short to tell"}
    return ", ".join(f"{words[k]} in {v} of {n} seeds" for k, v in counts.items())


def plateau_sentence(d: dict[str, Any], who: dict[str, str]) -> str:
    """Which arm plateaued first under a decaying schedule (rules.plateau on validation macro-F1)."""
    o, budget, arm = d["over_seeds"]["plateau"], d["budget"], who["pretrained"]
    sched = f" under the {md(d['schedule'])} schedule" if d.get("schedule") else ""
    n = len(d["seeds"])
    if n == 1:
        p = _one(d, "plateau")
        first = p["first"]
        if first in ("pretrained", "scratch"):
            other = "scratch" if first == "pretrained" else "pretrained"
            return (f"{who[first]} plateaued first{sched}: it {_state(p[first], budget)}; {who[other]} "
                    f"{_state(p[other], budget)}.")
        if first == "same":
            return (f"Both plateaued at about the same step{sched}: {arm} {_state(p['pretrained'], budget)}, scratch "
                    f"{_state(p['scratch'], budget)}.")
        if p["scratch"]["state"] == p["pretrained"]["state"] == "rising":
            return (f"Neither plateaued{sched}: both were still improving at the end (validation macro-F1 "
                    f"{number(p['pretrained']['rise'], 'metric', True)} ({arm}) and "
                    f"{number(p['scratch']['rise'], 'metric', True)} (scratch) {LAST}, more than {PLATEAU_TOL}).")
        return (f"Neither plateaued{sched}: {arm} {_state(p['pretrained'], budget)}; scratch "
                f"{_state(p['scratch'], budget)}.")
    states = (f"{arm}: {_tally(o['states']['pretrained'], n)}; scratch: {_tally(o['states']['scratch'], n)}")
    rise = (f"; validation macro-F1 changed by {number(o['rise']['pretrained'], 'metric', True)} ({arm}) vs "
            f"{number(o['rise']['scratch'], 'metric', True)} (scratch) {LAST} on average, "
            f"{_paired(o['rise'], 'metric')}" if o["rise"] and o["rise"]["paired_ci95"] is not None else "")
    firsts = o["first"]
    if o["steps"] and o["steps"]["paired_n"] == n and o["steps"]["paired_ci95"] is not None:
        c = o["steps"]
        numbers = (f"at step {number(c['pretrained'], 'step')} ({arm}) vs {number(c['scratch'], 'step')} (scratch) "
                   f"on average; {_paired(c)}")
        win = _winner(c, True)
        return (f"{who[win]} plateaued first{sched}: both plateaued in every seed, {numbers}." if win else
                f"Both plateaued in every seed{sched}, with no significant difference in when: {numbers}.")
    if list(firsts) == ["neither"]:
        return f"Neither plateaued in any seed{sched} ({states}){rise}."
    if len(firsts) == 1 and next(iter(firsts)) in ("pretrained", "scratch"):
        return f"{who[next(iter(firsts))]} plateaued first in every seed{sched} ({states}){rise}."
    return f"Which arm plateaued first differs between seeds{sched} ({states}){rise}."


def stop_sentence(d: dict[str, Any], who: dict[str, str]) -> str:
    """Which arm stopped first under the plateau schedule (summary steps and stopped_early)."""
    o, budget, arm, n = d["over_seeds"]["stop"], d["budget"], who["pretrained"], len(d["seeds"])
    patience = f", patience {d['patience']} evaluations" if d.get("patience") else ""
    if n == 1:
        st = _one(d, "stop")

        def run(x: dict[str, Any]) -> str:
            how = (f"stopped at {at_step(x['steps'], budget)}" if x["stopped_early"]
                   else f"trained its whole budget ({number(x['steps'], 'step')} steps)")
            wall = f" after {duration(x['wall_time_s'])} of training" if x["wall_time_s"] is not None else ""
            return f"{how}{wall}, its last improvement at step {number(x['last_improvement'], 'step')}"

        runs = f"{arm} {run(st['pretrained'])}; scratch {run(st['scratch'])}"
        if not st["scratch"]["stopped_early"] and not st["pretrained"]["stopped_early"]:
            return f"Neither stopped early (plateau schedule{patience}): {runs}."
        if st["first"] == "same":
            return f"Both stopped at about the same step (plateau schedule{patience}): {runs}."
        return f"{who[st['first']]} stopped first (plateau schedule{patience}): {runs}."
    c, w = o["steps"], o["wall_time_s"]
    early = (f"stopped early in {o['stopped_early']['pretrained']} ({arm}) and {o['stopped_early']['scratch']} "
             f"(scratch) of {n} seeds")
    numbers = (f"at step {number(c['pretrained'], 'step')} ({arm}) vs {number(c['scratch'], 'step')} (scratch) on "
               "average"
               + (f", after {duration(w['pretrained'])} vs {duration(w['scratch'])} of training" if w else "")
               + (f"; {_paired(c)}" if c["paired_ci95"] is not None else ""))
    win = _winner(c, True)
    if win:
        return f"{who[win]} stopped first (plateau schedule{patience}; {early}): {numbers}."
    return f"No significant difference in when they stopped (plateau schedule{patience}; {early}): {numbers}."


def best_sentence(cmp: dict[str, dict[str, Any]], arm: str, headline: dict[str, Any]) -> str:
    """Which arm ended higher on the primary protocol (the final model), with the best evaluation (picked on
    the validation split) only as a labelled secondary number."""
    c = cmp[headline["quantity"]]
    n = c["paired_n"]
    n_scratch, n_pre = c["n_seeds"]
    if n_scratch == n_pre == n:
        numbers = (f"{number(c['pretrained'], 'metric')} ({arm}) vs {number(c['scratch'], 'metric')} (scratch), "
                   f"{number(c['pretrained_minus_scratch'], 'metric', True)}"
                   + (f", means over {n} seeds" if n > 1 else ""))
    else:  # the means cover different seeds: the difference is over the seeds both arms have
        numbers = (f"{number(c['pretrained'], 'metric')} ({arm}, {_seeds(n_pre)}) vs {number(c['scratch'], 'metric')} "
                   f"(scratch, {_seeds(n_scratch)}); over the {_seeds(n)} both have, "
                   f"{number(c['pretrained_minus_scratch'], 'metric', True)}")
    what = f"End of training ({headline['text']}, the primary protocol)"
    if c["paired_ci95"] is not None:
        win = _winner(c, False)
        ci = f"paired 95% CI {interval(c['paired_ci95'], True)}"
        text = (f"{what}: {who_name(win, arm)} ended significantly higher: {numbers}; {ci}" if win
                else f"{what}: no significant difference: {numbers}; {ci} includes 0")
    else:
        v = verdict(c["pretrained_minus_scratch"], False, EQUAL_WITHIN)
        text = (f"{what}: about equal (|difference| <= {EQUAL_WITHIN}): {numbers}" if v == "equal"
                else f"{what}: {who_name(v, arm)} ended higher: {numbers}")
    best = cmp.get("f1_macro")
    if best:
        steps = cmp.get("f1_macro_step")
        at = (f", at step {number(steps['pretrained'], 'step')} vs {number(steps['scratch'], 'step')}"
              if steps else "")
        text += (f". Secondary, not the answer: the best validation macro-F1 over the evaluations (picked on the "
                 f"validation split itself, so optimistic) was {number(best['pretrained'], 'metric')} ({arm}) vs "
                 f"{number(best['scratch'], 'metric')} (scratch){at}")
    return text + "."


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def who_name(v: str, arm: str) -> str:
    return arm if v == "pretrained" else "scratch"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
