"""The report's conclusions: sentences generated from summary.json's numbers, claiming nothing they do not show.

The answer: what the headline rests on (headline_scope), at which fractions each pretrained arm was ahead, with
a trend across fractions only where rules.trend found one and what pretraining cost (overall_conclusions), and
every protocol's verdicts (evaluation_conclusions). With several seeds a difference is called only when its
paired 95% interval excludes 0; with one seed the numbers are observations, "about equal" within the rules'
ties, and the answer says once what one seed cannot tell. The four questions per fraction are questions.py's.
"""

from __future__ import annotations

from typing import Any

from ..stats import TWO_SEEDS
from .formatting import duration, interval, number
from .render import md
from .results import PROTOCOLS
from .rules import EQUAL_WITHIN, verdict
from .summary import NAMES, baseline_name


def headline_scope(summary: dict[str, Any]) -> str:
    """The answer's first paragraph: which number it rests on, on which split, and what its intervals over
    seeds cover (with one shared pretraining, not pretraining's own variance)."""
    seeds, metric = summary["seeds"], NAMES[summary["headline"]["metric"]]
    if summary["headline"]["split"] == "test":
        text = (f"The answer rests on the **test split**: test {metric} of each run's final model (end of "
                "training, no evaluation picked on any split), pretrained minus scratch; validation numbers (curves, "
                "the best evaluation as a secondary number) follow in the sections below.")
    else:
        text = ("The answer rests on the **validation split** (there is no test split): "
                f"validation {metric} of each run's final model (end of training, no evaluation picked), pretrained "
                "minus scratch. The best evaluation of a run, picked on that same split, appears only as a labelled "
                "secondary number.")
    if len(seeds) >= 2 and summary["pretraining"] == "shared":
        text += (f" Its intervals over the {len(seeds)} seeds cover label subsets and initialisations but not "
                 f"pretraining: one pretraining per task (seed {seeds[0]}), shared by every seed.")
    elif len(seeds) >= 2:
        text += (f" Each of the {len(seeds)} seeds is a whole replicate (its own pretraining, label subset and "
                 "initialisation), so the intervals include pretraining's variance.")
    q = summary["headline"]["quantity"]
    pairs = max((c[q]["paired_n"] for cs in summary["comparison"].values() for c in cs.values() if q in c), default=0)
    if pairs < 2:
        if len(seeds) < 2:
            text += (" With one seed per arm, every difference in this report is a single observation: it cannot "
                     "tell one from seed-to-seed noise, so nothing is called significant and no trend across "
                     "fractions or methods is claimed.")
        else:
            text += (" So far no fraction has two seeds with both fine-tuning arms finished, so each fine-tuning "
                     "difference below is a single observation: the report cannot tell it from seed-to-seed noise, "
                     "so none is called significant and no trend across fractions is claimed.")
    return text


def overall_conclusions(summary: dict[str, Any], arms: list[str], fractions: list[float]) -> list[str]:
    """At which fractions the pretrained arm was ahead (on the headline quantity: the final model's test, else
    validation, macro-F1) and by how much, by the verdict rule: with several seeds only where the paired
    interval excludes 0, with one seed beyond EQUAL_WITHIN; and a trend across fractions only where
    summary.json's "trend" (rules.trend) found one."""
    out = []
    q, name = summary["headline"]["quantity"], summary["headline"]["text"]
    for arm in arms:
        cmp = {float(f): c[arm][q] for f, c in summary["comparison"].items() if arm in c and q in c[arm]}
        if not cmp:
            out.append(f"{md(arm)}: no fraction has finished runs of both scratch and {md(arm)} yet, so no answer.")
            continue
        pending = [f"{f:g}" for f in fractions if f not in cmp]
        tested = {f: c for f, c in cmp.items() if c.get("significant") is not None}
        single = {f: c for f, c in cmp.items() if c.get("significant") is None}
        parts = []
        if tested:
            parts.append(f"on {name} (pretrained minus scratch [paired 95% t interval over seeds]): "
                         + _tested_groups(tested) + ".")
        if single:
            parts.append(f"{'on ' if not parts else 'Where there is one seed, on '}{name} (pretrained minus scratch; "
                         f"one seed: differences within {EQUAL_WITHIN} count as no difference, nothing is called "
                         "significant): " + _single_groups(single) + ".")
        text = f"**Pretraining with {md(arm)}**, " + " ".join(parts)
        two = [f"{f:g}" for f, c in tested.items() if c.get("paired_n") == 2]
        if two:
            text += f" At fraction {', '.join(two)} the interval rests on two seeds: {TWO_SEEDS}."
        if pending:
            text += f" Not comparable yet at fraction {', '.join(pending)} (runs missing or unfinished)."
        text += trend_sentence(summary, arm) + cost_sentence(summary, arm)
        out.append(text)
    return out


def _tested_groups(cmp: dict[float, dict[str, Any]]) -> str:
    """Several seeds: significantly ahead / behind where the paired interval excludes 0, else no difference."""
    groups: dict[str, list[str]] = {"ahead": [], "behind": [], "none": []}
    for f in sorted(cmp, reverse=True):
        c = cmp[f]
        d, (lo, hi) = c["pretrained_minus_scratch"], c["paired_ci95"]
        groups["none" if not c["significant"] else "ahead" if d > 0 else "behind"].append(
            f"{f:g} ({d:+.4f} [{lo:+.4f}, {hi:+.4f}])")
    return _phrase([("was", "significantly ahead at", groups["ahead"]),
                    ("was", "significantly behind at", groups["behind"]),
                    ("made", "no significant difference at", groups["none"])])


def _single_groups(cmp: dict[float, dict[str, Any]]) -> str:
    """One seed: ahead / behind / about equal by EQUAL_WITHIN, an observation."""
    groups: dict[str, list[str]] = {"pretrained": [], "scratch": [], "equal": []}
    for f in sorted(cmp, reverse=True):
        d = cmp[f]["pretrained_minus_scratch"]
        groups[verdict(d, False, EQUAL_WITHIN)].append(f"{f:g} ({d:+.4f})")
    return _phrase([("was", "ahead at", groups["pretrained"]), ("was", "behind at", groups["scratch"]),
                    ("made", "about no difference at", groups["equal"])])


def _phrase(groups: list[tuple[str, str, list[str]]]) -> str:
    """'was ahead at fraction 1 (...); behind at 0.1 (...)': the verb and 'fraction' once, in the first part."""
    parts = []
    for verb, what, items in groups:
        if items:
            parts.append(f"{what} {', '.join(items)}" if parts else f"{verb} {what} fraction {', '.join(items)}")
    return "; ".join(parts)


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
            out.append(f"**{PROTOCOLS[protocol]}, {md(method)} vs {baseline_name(protocol)}** "
                       f"({split} {NAMES[metric]}): " + "; ".join(p for p in parts if p) + ".")
    return out


def trend_sentence(summary: dict[str, Any], arm: str) -> str:
    """A trend across fractions only where rules.trend found one; with several seeds and more than one
    fraction, say so when it did not."""
    t = (summary.get("trend") or {}).get(arm)
    if not t or not t["changes"]:
        return ""
    if t["verdict"]:
        return (f" The gain {t['verdict']} as the label budget shrinks: every change of it from one fraction to the "
                "next smaller one is significant (paired by seed) and points the same way.")
    if any(c["significant"] is None for c in t["changes"]):
        return ""  # one seed: no trend can be tested
    return (" No trend across fractions is claimed: not every change of the gain from one fraction to the next "
            "smaller one is significant in the same direction (paired by seed).")
