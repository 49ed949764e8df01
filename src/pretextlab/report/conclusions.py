"""The report's conclusions: sentences generated from summary.json's numbers, claiming nothing they do not show.

Differences within EQUAL_WITHIN count as none; "ahead"/"behind" say only which way a difference points,
and whether it is real is said by the paired interval over seeds (or that one seed leaves it untested).
"""

from __future__ import annotations

from typing import Any

from ..stats import TWO_SEEDS
from .formatting import duration, interval, number
from .results import PROTOCOLS
from .rules import EQUAL_WITHIN, FRACTION_OF_BEST, verdict
from .summary import NAMES, baseline_name


def fraction_conclusions(cmp: dict[str, dict[str, Any]], arm: str) -> list[str]:
    """Which arm's loss fell faster, whose macro-F1 rose faster, which plateaued first, which peaked higher."""
    name = {"pretrained": arm, "scratch": "scratch"}
    n_scratch, n_pre = cmp["f1_macro"]["n_seeds"]
    seeds = ("" if n_scratch == n_pre == 1 else f" (means over {n_scratch} seeds)" if n_scratch == n_pre
             else f" (means over {n_pre} {arm} and {n_scratch} scratch seeds)")
    out = []

    first, mean = cmp["train_loss_first_epoch"], cmp["train_loss_mean"]
    verdicts = {verdict(first["pretrained_minus_scratch"], True, EQUAL_WITHIN),
                verdict(mean["pretrained_minus_scratch"], True, EQUAL_WITHIN)} - {"equal"}
    numbers = (f"after epoch 1: {first['pretrained']:.3f} ({arm}) vs {first['scratch']:.3f} (scratch); "
               f"mean over the epochs (area under the curve per epoch): {mean['pretrained']:.3f} vs "
               f"{mean['scratch']:.3f}")
    if not verdicts:
        out.append(f"Training loss fell about equally fast: {numbers}{seeds}.")
    elif len(verdicts) == 1:
        out.append(f"Training loss fell faster for {name[verdicts.pop()]}: {numbers}{seeds}.")
    else:
        out.append(f"Training loss: mixed, neither arm fell faster on both measures: {numbers}{seeds}.")

    f1 = cmp["f1_macro"]
    higher = verdict(f1["pretrained_minus_scratch"], False, EQUAL_WITHIN)

    def lower_best(v: str) -> str:
        """A caveat when the faster arm got there with less far to go."""
        if v == "equal" or higher in ("equal", v):
            return ""
        return (f"; but {name[v]}'s own best is lower ({f1[v]:.4f} vs {f1[higher]:.4f}), so it had less far "
                "to go")

    e, t = cmp["time_to_95_epoch"], cmp["time_to_95_wall_time_s"]
    v = verdict(e["pretrained_minus_scratch"], True, 0.5)
    numbers = (f"{FRACTION_OF_BEST:.0%} of its own best at epoch {number(e['pretrained'], 'epoch')} "
               f"({t['pretrained']:.0f} s) for {arm} vs epoch {number(e['scratch'], 'epoch')} ({t['scratch']:.0f} s) "
               "for scratch")
    out.append(f"Validation macro-F1 rose {'equally fast' if v == 'equal' else 'faster for ' + name[v]}: "
               f"{numbers}{seeds}{lower_best(v)}.")

    p = cmp["plateau_epoch"]
    v = verdict(p["pretrained_minus_scratch"], True, 0.5)
    numbers = (f"plateau at epoch {number(p['pretrained'], 'epoch')} for {arm} vs {number(p['scratch'], 'epoch')} "
               "for scratch")
    out.append(_sentence(f"{'both plateaued at about the same epoch' if v == 'equal' else name[v] + ' plateaued first'}"
                         f": {numbers}{seeds}{lower_best(v)}."))

    d, v = f1["pretrained_minus_scratch"], higher
    numbers = f"best validation macro-F1 {f1['pretrained']:.4f} ({arm}) vs {f1['scratch']:.4f} (scratch), {d:+.4f}"
    sentence = (f"The maximum was about equal (|difference| <= {EQUAL_WITHIN}): {numbers}" if v == "equal"
                else f"{name[v]} reached the higher maximum: {numbers}")
    if f1.get("paired_ci95") is not None:
        sentence += (f"{seeds}; paired 95% CI of the difference {interval(f1['paired_ci95'], True)}, "
                     + ("significant" if f1["significant"] else "so not significant"))
    else:
        sentence += "; one seed, so no confidence interval can be computed and the difference is not tested"
    out.append(_sentence(sentence + "."))
    if "test_f1_macro" in cmp:
        out.append(test_sentence(cmp["test_f1_macro"], arm, seeds))
    return out


def test_sentence(c: dict[str, Any], arm: str, seeds: str) -> str:
    """The held-out number beside the validation ones: the final model's test macro-F1 of both arms."""
    text = (f"On the test split (final model, end of training): macro-F1 {c['pretrained']:.4f} ({arm}) vs "
            f"{c['scratch']:.4f} (scratch), {c['pretrained_minus_scratch']:+.4f}{seeds}")
    if c.get("paired_ci95") is not None:
        text += (f"; paired 95% CI {interval(c['paired_ci95'], True)}, "
                 + ("significant" if c["significant"] else "so not significant"))
    return text + "."


def headline_scope(summary: dict[str, Any]) -> str:
    """The answer's first paragraph: which number it rests on, on which split, and what its intervals over
    seeds cover (with one shared pretraining, not pretraining's own variance)."""
    seeds = summary["seeds"]
    if summary["headline"]["split"] == "test":
        text = ("The answer rests on the **test split**: test macro-F1 of each run's final model (end of training, "
                "no epoch picked on any split), pretrained minus scratch; validation numbers (curves, best epochs) "
                "follow in the sections below.")
    else:
        text = ("The answer rests on the **validation split** (there is no test split): best validation macro-F1 "
                "over the epochs, pretrained minus scratch; the same split picked that epoch, so the numbers are "
                "optimistic.")
    if len(seeds) >= 2 and summary["pretraining"] == "shared":
        text += (f" Its intervals over the {len(seeds)} seeds cover label subsets and initialisations but not "
                 f"pretraining: one pretraining per task (seed {seeds[0]}), shared by every seed.")
    elif len(seeds) >= 2:
        text += (f" Each of the {len(seeds)} seeds is a whole replicate (its own pretraining, label subset and "
                 "initialisation), so the intervals include pretraining's variance.")
    return text


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def overall_conclusions(summary: dict[str, Any], arms: list[str], fractions: list[float]) -> list[str]:
    """At which fractions the pretrained arm was ahead (on the headline quantity: test macro-F1, else best
    validation macro-F1), by how much, and whether the paired interval over seeds supports it."""
    out = []
    q, name = summary["headline"]["quantity"], summary["headline"]["text"]
    for arm in arms:
        diffs = {float(f): c[arm][q]["pretrained_minus_scratch"]
                 for f, c in summary["comparison"].items() if arm in c and q in c[arm]}
        if not diffs:
            out.append(f"{arm}: no fraction has finished runs of both scratch and {arm} yet, so no answer.")
            continue
        pending = [f"{f:g}" for f in fractions if f not in diffs]
        # "ahead"/"behind", not "helped"/"hurt": whether a difference is real is said by the significance note
        groups = {"ahead": [], "behind": [], "equal": []}
        for f in sorted(diffs, reverse=True):
            v = verdict(diffs[f], False, EQUAL_WITHIN)
            groups["equal" if v == "equal" else "ahead" if v == "pretrained" else "behind"].append(
                f"{f:g} ({diffs[f]:+.4f})")
        parts = [f"was ahead at fraction {', '.join(groups['ahead'])}" if groups["ahead"]
                 else "was ahead at no fraction"]
        if groups["behind"]:
            parts.append(f"behind at {', '.join(groups['behind'])}")
        if groups["equal"]:
            parts.append(f"made about no difference at {', '.join(groups['equal'])}")
        text = (f"**Pretraining with {arm}** " + "; ".join(parts) + f" ({name}, pretrained minus "
                f"scratch; differences within {EQUAL_WITHIN} count as no difference).")
        if pending:
            text += f" Not comparable yet at fraction {', '.join(pending)} (runs missing or unfinished)."
        ordered = [diffs[f] for f in sorted(diffs, reverse=True)]  # most labels first
        steps = [b - a for a, b in zip(ordered, ordered[1:])]
        if steps and all(d > EQUAL_WITHIN for d in steps):
            text += " The gain grows as the label budget shrinks."
        elif steps and all(d < -EQUAL_WITHIN for d in steps):
            text += " The gain shrinks as the label budget shrinks."
        text += significance_note(summary, arm) + cost_sentence(summary, arm)
        out.append(text)
    return out


def cost_sentence(summary: dict[str, Any], arm: str) -> str:
    """What pretraining `arm` cost: every pretraining of it (one per seed), or the one shared by every seed."""
    p = summary["pretext"].get(arm) or {}
    total, n, planned = p.get("total_cost_s"), p.get("pretrainings", 0), p.get("planned_pretrainings", 0)
    if not total:
        return ""
    if p.get("seed") is None:  # one pretraining, shared
        who = "all seeds and fractions" if len(summary["seeds"]) > 1 else "all fractions"
        return f" Pretraining cost {duration(total)} once, shared by {who}."
    so_far = f" of {planned} so far" if planned > n else ""
    if n == 1:
        return f" Pretraining cost {duration(total)} (one pretraining{so_far}, seed {p['seed']})."
    return (f" Pretraining cost {duration(total / n)} per seed on average ({n}{so_far} pretrainings, "
            f"{duration(total)} in all).")


def evaluation_conclusions(evaluation: dict[str, Any], metric: str = "f1_macro") -> list[str]:
    """Per protocol and pretext: where the paired 95% interval says better or worse, where it does
    not, and where one seed leaves the difference untested (on the evaluation's split, which it names)."""
    out = []
    split = evaluation.get("split", "validation")
    for protocol, by_f in evaluation["vs_baseline"].items():
        for method in dict.fromkeys(m for d in by_f.values() for m in d):
            groups: dict[str, list[str]] = {"higher": [], "lower": [], "not": [], "untested": []}
            for f, d in by_f.items():
                c = d.get(method, {}).get(metric)
                if c is None:
                    continue
                diff = number(c["difference"], "metric", sign=True)
                if c["significant"] is None:
                    groups["untested"].append(f"{f} ({diff})")
                else:
                    key = "not" if not c["significant"] else "higher" if c["difference"] > 0 else "lower"
                    groups[key].append(f"{f} ({diff}, 95% CI {interval(c['ci95'], True)}, {c['n']} seeds)")
            parts = [f"significantly higher at fraction {', '.join(groups['higher'])}" if groups["higher"] else "",
                     f"significantly lower at fraction {', '.join(groups['lower'])}" if groups["lower"] else "",
                     f"no significant difference at fraction {', '.join(groups['not'])}" if groups["not"] else "",
                     f"differences at fraction {', '.join(groups['untested'])} come from one seed, so no confidence "
                     "interval can be computed and none is called significant" if groups["untested"] else ""]
            out.append(f"**{PROTOCOLS[protocol]}, {method} vs {baseline_name(protocol)}** ({split} {NAMES[metric]}): "
                       + "; ".join(p for p in parts if p) + ".")
    return out


def significance_note(summary: dict[str, Any], arm: str) -> str:
    """Which headline differences of `arm` the paired interval supports, or that none was tested."""
    q = summary["headline"]["quantity"]
    cmp = {f: c[arm][q] for f, c in summary["comparison"].items() if arm in c and q in c[arm]}
    verdicts = {v: [f for f, c in cmp.items() if c.get("significant") is v] for v in (True, False, None)}
    if not verdicts[True] and not verdicts[False]:
        return " One seed per arm: no confidence interval can be computed, so no difference is called significant."
    parts = [f"significant at fraction {', '.join(verdicts[True])}" if verdicts[True] else "significant at no fraction"]
    if verdicts[False]:
        parts.append(f"not significant at {', '.join(verdicts[False])}")
    if verdicts[None]:
        parts.append(f"not tested at {', '.join(verdicts[None])} (one seed)")
    two = [f for f, c in cmp.items() if c.get("significant") is not None and c.get("paired_n") == 2]
    caution = f" At fraction {', '.join(two)} the interval rests on two seeds: {TWO_SEEDS}." if two else ""
    return " Paired over seeds (95% t interval), the difference is " + "; ".join(parts) + "." + caution


def split_note(summary: dict[str, Any]) -> str:
    """Said once at the top: which split the report's numbers are on, and what each split was used for."""
    ds = summary.get("dataset") or {}
    if summary["headline"]["split"] == "test":
        n = f" ({ds['n_test']} images)" if ds.get("n_test") else ""
        return (f"Splits: claims (the answer, the protocol comparison) are on the **test split**{n}, scored once at "
                "the end of training with each run's final model and each fitted probe; nothing is chosen on it. "
                "The validation split gives the curves and the per-epoch rules (best epoch, plateau, time to 95%). "
                "Every table and figure names its split.")
    return ("Splits: **no test split**: every number is on the validation split. The answer's best validation "
            "macro-F1 was picked on that same split (the best epoch), so it is optimistic; the protocol comparison "
            "uses end-of-training numbers, with no epoch picked. A study with a test set (--test-data, or a data "
            "folder with train/ and test/) reports held-out numbers.")


def precision_warning(precision: dict[str, Any]) -> str | None:
    """One line when a run trained at another precision than the study's (or, with none recorded, when the
    runs disagree among themselves): their numbers are not from the same arithmetic."""
    differing = precision["differing"]
    if not differing and (precision["study"] or len(set(precision["runs"].values())) < 2):
        return None
    if differing:
        return (f"**Warning**: {len(differing)} run(s) trained at another precision than the study's "
                f"{precision['study']} (config.json resolved.precision): "
                + ", ".join(f"`{n}` ({p})" for n, p in differing.items()) + ".")
    return ("**Warning**: the runs trained at different precisions (config.json resolved.precision): "
            + ", ".join(f"`{n}` ({p})" for n, p in precision["runs"].items()) + ".")
