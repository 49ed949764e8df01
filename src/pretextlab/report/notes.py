"""The report's notes on what its numbers are: the rules its answers come from, the splits, the precision the
runs trained at, and the study's time beside its plan. Phrased from summary.json, like the conclusions.
"""

from __future__ import annotations

from typing import Any

from .formatting import duration
from .render import md
from .rules import RULES


def rule_lines(summary: dict[str, Any]) -> list[str]:
    """The rules the report's answers come from, one line each, as summary.json's "rules" records them (the
    plateau rule of the schedules the study's runs trained under, the length rule where length is an axis)."""
    schedules = {e["schedule"] for arms in (summary.get("answers") or {}).values() for e in arms.values()}
    lines = [f"**Headline**: {summary['headline']['text']} (the final model: end of training, or the best "
             "evaluation the plateau schedule kept); the highest value over a run, picked on the validation split, "
             "stands beside it",
             f"**How fast the losses fell and the validation metric rose**: {RULES['levels']}; the training loss is "
             "steps.csv's, smoothed as the figures draw it"]
    if schedules & {"wsd", "constant"} or not schedules:
        lines.append(f"**Which reached a plateau first**: {RULES['plateau']}")
    if schedules & {"onecycle", "cosine"}:
        lines.append(f"**Plateau under a decaying schedule** (not answerable: the schedule flattens the curve; "
                     f"stated for the record): {RULES['decaying_plateau']}")
    if "plateau" in schedules:
        lines.append(f"**Plateau under the plateau schedule**: {RULES['plateau_schedule']}")
    lines += [f"**Verdicts**: {RULES['verdicts']}", f"**Trends**: {RULES['trend']}"]
    if summary.get("lengths"):  # a study whose pretraining length is an axis
        lines.append(f"**How much pretraining pays**: {RULES['lengths']}")
    return lines


def timing_sentence(timing: dict[str, Any]) -> str | None:
    """The study's actual time beside the time it planned at its start (study.json "estimate")."""
    total, planned = timing.get("total_s"), timing.get("estimated_s")
    if not total and not planned:
        return None
    so_far = "Total" if timing.get("finished") else "Total of the stages finished so far (study.json has no total yet)"
    text = f"{so_far}: {duration(total)}" if total else "No stage has finished yet"
    if planned:
        stages = (timing.get("estimate") or {}).get("stages")
        text += (f", against {duration(planned)} planned at the study's start (study.json estimate"
                 + (f", {md(stages)} stages" if stages else "") + ")")
        if total and timing.get("finished"):
            text += f": the study took {total / planned:.2f}x its plan"
    else:
        text += "; study.json holds no plan to set beside it (the study predates the estimate)"
    return text + "."


def split_note(summary: dict[str, Any]) -> str:
    """Said once at the top: which split the report's numbers are on, and what each split was used for."""
    ds = summary.get("dataset") or {}
    if summary["headline"]["split"] == "test":
        n = f" ({md(ds['n_test'])} images)" if ds.get("n_test") else ""
        return (f"Splits: claims (the answer, the protocol comparison) are on the **test split**{n}, scored once at "
                "the end of training with each run's final model and each fitted probe; nothing is chosen on it. "
                "The validation split gives the curves and the rules on them (speed, plateau, the best evaluation "
                "as a secondary number). Every table and figure names its split.")
    return ("Splits: **no test split**: every number is on the validation split. Claims use the end-of-training "
            "numbers (each run's final model, no evaluation picked); the best evaluation of a run, picked on the "
            "same split and so optimistic, is only a labelled secondary number. A study with a test set "
            "(--test-data, or a data folder with train/ and test/) reports held-out numbers.")


def precision_warning(precision: dict[str, Any]) -> str | None:
    """One line when a run trained at another precision than the study's (or, with none recorded, when the
    runs disagree among themselves): their numbers are not from the same arithmetic."""
    differing = precision["differing"]
    if not differing and (precision["study"] or len(set(precision["runs"].values())) < 2):
        return None
    if differing:
        return (f"**Warning**: {len(differing)} run(s) trained at another precision than the study's "
                f"{md(precision['study'])} (config.json resolved.precision): "
                + ", ".join(f"{md(n, code=True)} ({md(p)})" for n, p in differing.items()) + ".")
    return ("**Warning**: the runs trained at different precisions (config.json resolved.precision): "
            + ", ".join(f"{md(n, code=True)} ({md(p)})" for n, p in precision["runs"].items()) + ".")
