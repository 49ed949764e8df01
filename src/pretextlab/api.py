"""The Python API for notebooks: run a study, write its report, read its answers as plain objects.

    from pretextlab import DataConfig, run_study, write_report, load_results
    folder = run_study(DataConfig(source="my_images/"), "studies/mine", fractions=(1.0, 0.1), preset="fast")
    write_report(folder)
    results = load_results(folder)
    results.cell(0.1, "context")            # Cell(mean=..., std=..., n=..., ci95=(lo, hi), by_seed={...})
    results.difference(0.1, "context")      # Difference(mean=..., ci95=..., significant=..., n=...)

The numbers are summary.json's (the report's), read back, so a notebook and the report never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import load_json
from .layout import REPORT_SUMMARY


@dataclass(frozen=True)
class Cell:
    """One arm's metric at one label fraction and protocol, over seeds."""

    mean: float
    std: float | None
    n: int
    ci95: tuple[float, float] | None  # Student t interval over seeds; None with one seed
    by_seed: dict[int, float]


@dataclass(frozen=True)
class Difference:
    """Pretrained minus scratch, paired by seed (same label subset), and whether its interval excludes 0."""

    mean: float
    ci95: tuple[float, float] | None
    significant: bool | None  # None: one seed, no interval
    n: int


@dataclass
class Results:
    """A study's answers: per label fraction, arm and protocol (finetune, linear, knn), on the validation
    split, or on the test split where the study had one (`split="test"`)."""

    path: Path
    summary: dict[str, Any]

    @property
    def fractions(self) -> list[float]:
        return sorted({float(f) for cells in self._cells("validation").values() for f in cells}, reverse=True)

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(a for cells in self._cells("validation").values() for fr in cells.values()
                                  for a in fr))

    def cell(self, fraction: float, arm: str, protocol: str = "finetune", metric: str = "f1_macro",
             split: str = "validation") -> Cell | None:
        c = self._cells(split).get(protocol, {}).get(f"{fraction:g}", {}).get(arm, {}).get(metric)
        if c is None:
            return None
        return Cell(c["mean"], c.get("std"), c["n"], _pair(c.get("ci95")),
                    {int(s): v for s, v in (c.get("by_seed") or {}).items()})

    def difference(self, fraction: float, arm: str, protocol: str = "finetune", metric: str = "f1_macro",
                   split: str = "validation") -> Difference | None:
        d = self._part(split).get("vs_baseline", {}).get(protocol, {}).get(f"{fraction:g}", {}).get(arm, {}).get(metric)
        if d is None:
            return None
        return Difference(d["difference"], _pair(d.get("ci95")), d.get("significant"), d["n"])

    def rows(self, metric: str = "f1_macro", split: str = "validation") -> list[dict[str, Any]]:
        """Every (fraction, arm, protocol) as one flat dict: easy to turn into a table or a DataFrame."""
        out = []
        for protocol, fractions in self._cells(split).items():
            for f, arms in fractions.items():
                for arm in arms:
                    c, d = self.cell(float(f), arm, protocol, metric, split), self.difference(float(f), arm, protocol,
                                                                                               metric, split)
                    if c is not None:
                        out.append({"fraction": float(f), "arm": arm, "protocol": protocol, "metric": metric,
                                    "mean": c.mean, "ci95": c.ci95, "n": c.n,
                                    "vs_scratch": d.mean if d else None, "vs_scratch_ci95": d.ci95 if d else None,
                                    "significant": d.significant if d else None})
        return out

    def _part(self, split: str) -> dict[str, Any]:
        ev = self.summary.get("evaluation") or {}
        if split == "validation":
            return ev
        if split == "test":
            return ev.get("test") or {}
        raise UserError(f"split '{split}' is unknown; use validation or test")

    def _cells(self, split: str) -> dict[str, Any]:
        return self._part(split).get("cells", {})


def _pair(ci: Any) -> tuple[float, float] | None:
    return (float(ci[0]), float(ci[1])) if ci else None


def load_results(study_dir: str | Path) -> Results:
    """A study's results from its summary.json (written by write_report / `pretextlab report`)."""
    path = Path(study_dir) / REPORT_SUMMARY
    if not path.is_file():
        raise UserError(f"{study_dir} has no {REPORT_SUMMARY}; write the report first: "
                        f"write_report({str(study_dir)!r})")
    return Results(Path(study_dir), load_json(path))
