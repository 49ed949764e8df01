"""docs/protocol.md's table, written from the committed runs in docs/protocol/<schedule>/f<fraction>-s<seed>/
(each run's summary.json, config.json and metrics.csv, as `pretextlab train` wrote them): the final validation
macro-F1 and training time of one-cycle and wsd fine-tuning side by side, paired by seed, and where each
wsd run reached its plateau before the rate fell (the answer page's rule).

    python scripts/protocol_table.py          # rewrite the block in docs/protocol.md
    python scripts/protocol_table.py --check  # exit 1 when the block is stale
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from pretextlab.report.rules import stable_plateau
from pretextlab.stats import paired_difference

ROOT = Path(__file__).resolve().parent.parent
RUNS, PAGE = ROOT / "docs" / "protocol", ROOT / "docs" / "protocol.md"
BEGIN, END = "<!-- table: written by scripts/protocol_table.py from docs/protocol/ -->", "<!-- end of table -->"
BASELINE = "onecycle"


def read(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    with open(folder / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    train = config["train"]
    planned = summary["planned_steps"]
    end = planned - int(planned * train.get("cooldown", 0.2)) if train["schedule"] == "wsd" else None
    curve = [(r["step"], r["val_f1_macro"]) for r in rows]
    return {"final": summary["final"]["f1_macro"], "max": summary["best"]["f1_macro"]["value"],
            "wall": summary["wall_time_s"], "train": rows[-1]["train_time_s"], "steps": planned, "stable_end": end,
            "plateau": stable_plateau(curve, planned, end) if end else None, "precision":
            config["resolved"]["precision"]}


def runs() -> dict[str, dict[str, dict[int, dict]]]:
    """schedule -> fraction -> seed -> the run's numbers, for every finished run."""
    out: dict[str, dict[str, dict[int, dict]]] = {}
    for folder in sorted(RUNS.glob("*/f*-s*")):
        if (folder / "summary.json").exists():
            frac, seed = folder.name[1:].rsplit("-s", 1)
            out.setdefault(folder.parent.name, {}).setdefault(frac, {})[int(seed)] = read(folder)
    return out


def block() -> str:
    data = runs()
    lines = [BEGIN, "", "| labels | schedule | seeds | final val macro-F1 (mean) | − one-cycle, paired [95% CI] | "
             "highest val macro-F1 | training time / one-cycle's | plateau before the decay (step) |",
             "|---|---|---|---|---|---|---|---|"]
    for frac in sorted({f for s in data.values() for f in s}, key=float, reverse=True):
        base = data.get(BASELINE, {}).get(frac, {})
        for sched in sorted(data, key=lambda s: (s != BASELINE, s)):
            rs = data[sched].get(frac)
            if not rs:
                continue
            final = statistics.fmean(r["final"] for r in rs.values())
            diff, ratio = "–", "–"
            if sched != BASELINE and set(rs) & set(base):
                d = paired_difference({s: r["final"] for s, r in base.items()}, {s: r["final"] for s, r in rs.items()})
                diff = f"{d['difference']:+.4f}" + (f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d["ci95"] else "")
                both = sorted(set(rs) & set(base))
                ratio = f"{statistics.fmean(rs[s]['train'] / base[s]['train'] for s in both):.2f}"
            plateaus = [f"s{s}: {r['plateau']['step']:g}" if r["plateau"] and r["plateau"]["state"] == "plateau"
                        else f"s{s}: none" for s, r in sorted(rs.items()) if r["plateau"] is not None]
            lines.append(f"| {float(frac):.0%} | {sched} | {', '.join(map(str, sorted(rs)))} | {final:.4f} | {diff} | "
                         f"{statistics.fmean(r['max'] for r in rs.values()):.4f} | {ratio} | "
                         f"{'; '.join(plateaus) or '–'} |")
    return "\n".join([*lines, "", END])


def render(page: str) -> str:
    head, rest = page.split(BEGIN, 1)
    return head + block() + rest.split(END, 1)[1]


if __name__ == "__main__":
    text = PAGE.read_text()
    new = render(text)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == text else 1)
    PAGE.write_text(new)
