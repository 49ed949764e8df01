"""The README's results tables, written from the committed studies' summary.json between the README's
markers, so that every number the README quotes is copied from a committed file (tests/test_readme.py fails
when the README and this script disagree).

    python scripts/readme_results.py          # rewrite the block in README.md
    python scripts/readme_results.py --check  # exit 1 when README.md's block is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results: written by scripts/readme_results.py from the studies' summary.json -->", \
    "<!-- end of results -->"
EXCERPT = "docs/study-cifar10-wsd"  # the study of the README's command (with --fractions 1,0.1 --seeds 0,1,2)
STUDIES = [  # folder, what it is, what it shows (words only: every number comes from the folder's files)
    ("docs/study-cifar10-wsd", "context vs scratch, 100/10%, the default recipe (the command above, "
                               "`--fractions 1,0.1 --seeds 0,1,2`)",
     "two pretext epochs of context prediction make no difference the seeds can tell at either budget"),
    ("docs/study-cifar10", "context vs scratch, 100/50/10%, one-cycle fine-tuning (`--preset fast-onecycle`)",
     "two pretext epochs give the fast CNN no head start it keeps; scratch ends higher with more labels"),
    ("docs/study-cifar10-methods", "four tasks, 1/5/10%",
     "rotation helps at every budget; context prediction makes no significant difference"),
    ("docs/plateau-10", "`--preset plateau`, rotation",
     "both networks stop early under patience; the final models tie"),
    ("docs/study-camvid", "CamVid segmentation (mean IoU), context vs scratch, 100/50/10%, one seed",
     "with the fast segmentation recipe, context pretraining lowers mean IoU at every fraction"),
    ("docs/resnet34-10", "ResNet-34 (32 px stem), one seed",
     "on a deeper network both pretext tasks help at 10%"),
]


def _num(x: float, sign: bool = True) -> str:
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def _difference(c: dict) -> str:
    """pretrained minus scratch with its paired 95% interval and verdict (none for one seed)."""
    text = _num(c["pretrained_minus_scratch"])
    if c.get("paired_ci95"):
        lo, hi = c["paired_ci95"]
        text += f" [{_num(lo)}, {_num(hi)}], " + ("significant" if c["significant"] else "not significant")
    return text


def _summary(folder: str) -> dict:
    return json.loads((ROOT / folder / "summary.json").read_text())


def block() -> str:
    """The markdown between the markers."""
    s = _summary(EXCERPT)
    q = s["headline"]["quantity"]
    lines = [BEGIN, "", f"From [{EXCERPT}/answers.md]({EXCERPT}/answers.md) ({s['headline']['text']}, mean ± std "
             "over 3 seeds; the difference is paired by seed, with its 95% t interval):", "",
             "| fraction | labelled images | scratch | context | context − scratch [95% CI] |", "|---|---|---|---|---|"]
    for f in sorted(s["comparison"], key=float, reverse=True):
        a, c = s["aggregate"][f], s["comparison"][f]["context"][q]
        n = next(r["n_train"] for r in s["runs"].values() if f"{r['fraction']:g}" == f)
        lines.append(f"| {f} | {n} | {_num(a['scratch'][q]['mean'], False)} ± {_num(a['scratch'][q]['std'], False)} "
                     f"| {_num(a['context'][q]['mean'], False)} ± {_num(a['context'][q]['std'], False)} "
                     f"| {_difference(c)} |")
    lines += ["", "| study | pretrained − scratch at 10% labels | what it shows |", "| --- | --- | --- |"]
    for folder, what, shows in STUDIES:
        s = _summary(folder)
        q = s["headline"]["quantity"]
        cmp = s["comparison"]["0.1"]
        cells = "; ".join(f"{arm} {_difference(c[q])}" for arm, c in cmp.items())
        lines.append(f"| [{what}]({folder}/answers.md) | {cells} | {shows} |")
    return "\n".join([*lines, "", END])


def render(readme: str) -> str:
    """README.md with its block replaced by block()."""
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block() + tail


if __name__ == "__main__":
    path = ROOT / "README.md"
    text = path.read_text()
    new = render(text)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == text else 1)
    path.write_text(new)
