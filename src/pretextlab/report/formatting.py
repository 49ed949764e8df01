"""Numbers as the report writes them, so that tables, conclusions and figure titles agree to the digit."""

from __future__ import annotations

import math
from typing import Any

DIGITS = {"metric": 4, "epoch": 1, "seconds": 1, "rate": 0, "step": 1}


def number(v: float | None, kind: str, sign: bool = False) -> str:
    """v with the digits of its kind (a whole epoch without decimals); "–" for a value a run did not log."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    digits = 0 if kind in ("epoch", "step") and float(v).is_integer() else DIGITS[kind]
    v = round(v, digits) + 0.0  # + 0.0: no "-0.0" for a difference that rounds to zero
    return f"{v:{'+' if sign else ''}.{digits}f}"


def interval(ci: list[float], sign: bool = False, kind: str = "metric") -> str:
    return f"[{number(ci[0], kind, sign)}, {number(ci[1], kind, sign)}]"


def at_step(step: float, budget: float | None) -> str:
    """An optimizer step with its share of the budget: "step 150 (64% of the budget)"."""
    share = f" ({step / budget:.0%} of the budget)" if budget else ""
    return f"step {number(step, 'step')}{share}"


def mean_std(agg: dict[str, Any] | None, kind: str) -> str:
    """mean ± std over seeds (just the value for one seed)."""
    if agg is None:
        return "–"
    return number(agg["mean"], kind) + (f" ± {number(agg['std'], kind)}" if agg["std"] is not None else "")


def duration(seconds: float) -> str:
    """14 s, 13 min 32 s, 2 h 05 min: readable at every scale a study runs at."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


def labels_at(summary: dict[str, Any], fraction: float) -> int | None:
    """How many labelled images a fraction's finished runs trained on (summary.json "runs"; None before one has
    finished)."""
    return next((s["n_train"] for s in summary["runs"].values() if s["fraction"] == fraction and s["n_train"]), None)


def fraction_title(summary: dict[str, Any], fraction: float) -> str:
    """A fraction's heading and panel title, with its number of labels once a run has finished."""
    n = labels_at(summary, fraction)
    return f"fraction {fraction:g}" + (f" ({n} labels)" if n else "")
