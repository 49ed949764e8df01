"""The study report: the homework's questions answered from the numbers the runs wrote.

`write_report(study_dir)` reads a study folder through `results` (it never trains) and writes

- report.md   figures referenced as figures/NAME.png, so report.md and figures/ can be copied
              together into docs/ and render on GitHub;
- report.html the same content, self-contained (figures inlined as base64);
- figures/*.png, drawn by `figures`;
- summary.json, the numbers behind the report (schema in `results`).

A study still in progress renders too: missing and unfinished runs are listed, curves show what
exists, and tables and conclusions use finished runs only (a partial curve has no "best" yet).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import statistics
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from .data import normalize
from .errors import UserError
from .figures import (
    SAMPLE_CAPTIONS,
    confusion_figure,
    early_features,
    examples_figure,
    feature_maps_figure,
    filters_figure,
    fraction_figure,
    fraction_title,
    load_pretext_backbone,
    loss_figure,
    metrics_figure,
    pretext_figure,
    samples_figure,
)
from .io import save_json, save_text
from .models import random_backbone
from .results import (
    EQUAL_WITHIN,
    FRACTION_OF_BEST,
    NAMES,
    PLATEAU_RULE,
    PROTOCOLS,
    RUN_NAME,
    T95_RULE,
    PretextRun,
    Study,
    baseline_name,
    column,
    fraction_key,
    load_samples,
    load_study,
    read_json,
    summarize_study,
)
from .stats import TWO_SEEDS

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Conclusions: sentences generated from the numbers, claiming nothing they do not show


def _verdict(diff: float, lower_is_better: bool, tol: float) -> str:
    """'pretrained', 'scratch' or 'equal' for a pretrained-minus-scratch difference."""
    if abs(diff) <= tol:
        return "equal"
    return "pretrained" if (diff < 0) == lower_is_better else "scratch"


def fraction_conclusions(cmp: dict[str, dict[str, Any]], arm: str) -> list[str]:
    """Which arm's loss fell faster, whose macro-F1 rose faster, which plateaued first, which peaked higher."""
    name = {"pretrained": arm, "scratch": "scratch"}
    n_scratch, n_pre = cmp["f1_macro"]["n_seeds"]
    seeds = ("" if n_scratch == n_pre == 1 else f" (means over {n_scratch} seeds)" if n_scratch == n_pre
             else f" (means over {n_pre} {arm} and {n_scratch} scratch seeds)")
    out = []

    first, mean = cmp["train_loss_first_epoch"], cmp["train_loss_mean"]
    verdicts = {_verdict(first["pretrained_minus_scratch"], True, EQUAL_WITHIN),
                _verdict(mean["pretrained_minus_scratch"], True, EQUAL_WITHIN)} - {"equal"}
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
    higher = _verdict(f1["pretrained_minus_scratch"], False, EQUAL_WITHIN)

    def lower_best(v: str) -> str:
        """A caveat when the faster arm got there with less far to go."""
        if v == "equal" or higher in ("equal", v):
            return ""
        return (f"; but {name[v]}'s own best is lower ({f1[v]:.4f} vs {f1[higher]:.4f}), so it had less far "
                "to go")

    e, t = cmp["time_to_95_epoch"], cmp["time_to_95_wall_time_s"]
    v = _verdict(e["pretrained_minus_scratch"], True, 0.5)
    numbers = (f"{FRACTION_OF_BEST:.0%} of its own best at epoch {_num(e['pretrained'], 'epoch')} "
               f"({t['pretrained']:.0f} s) for {arm} vs epoch {_num(e['scratch'], 'epoch')} ({t['scratch']:.0f} s) "
               "for scratch")
    out.append(f"Validation macro-F1 rose {'equally fast' if v == 'equal' else 'faster for ' + name[v]}: "
               f"{numbers}{seeds}{lower_best(v)}.")

    p = cmp["plateau_epoch"]
    v = _verdict(p["pretrained_minus_scratch"], True, 0.5)
    numbers = f"plateau at epoch {_num(p['pretrained'], 'epoch')} for {arm} vs {_num(p['scratch'], 'epoch')} for scratch"
    out.append(_sentence(f"{'both plateaued at about the same epoch' if v == 'equal' else name[v] + ' plateaued first'}"
                         f": {numbers}{seeds}{lower_best(v)}."))

    d, v = f1["pretrained_minus_scratch"], higher
    numbers = f"best validation macro-F1 {f1['pretrained']:.4f} ({arm}) vs {f1['scratch']:.4f} (scratch), {d:+.4f}"
    sentence = (f"The maximum was about equal (|difference| <= {EQUAL_WITHIN}): {numbers}" if v == "equal"
                else f"{name[v]} reached the higher maximum: {numbers}")
    if f1.get("paired_ci95") is not None:
        sentence += (f"{seeds}; paired 95% CI of the difference {_interval(f1['paired_ci95'], True)}, "
                     + ("significant" if f1["significant"] else "so not significant"))
    else:
        sentence += "; one seed, so no confidence interval can be computed and the difference is not tested"
    out.append(_sentence(sentence + "."))
    return out


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def overall_conclusions(summary: dict[str, Any], arms: list[str], fractions: list[float]) -> list[str]:
    """At which fractions the pretrained arm was ahead (best validation macro-F1), by how much, and whether
    the paired interval over seeds supports it."""
    out = []
    for arm in arms:
        diffs = {float(f): c[arm]["f1_macro"]["pretrained_minus_scratch"]
                 for f, c in summary["comparison"].items() if arm in c and "f1_macro" in c[arm]}
        if not diffs:
            out.append(f"{arm}: no fraction has finished runs of both scratch and {arm} yet, so no answer.")
            continue
        pending = [f"{f:g}" for f in fractions if f not in diffs]
        # "ahead"/"behind", not "helped"/"hurt": whether a difference is real is said by the significance note
        groups = {"ahead": [], "behind": [], "equal": []}
        for f in sorted(diffs, reverse=True):
            v = _verdict(diffs[f], False, EQUAL_WITHIN)
            groups["equal" if v == "equal" else "ahead" if v == "pretrained" else "behind"].append(
                f"{f:g} ({diffs[f]:+.4f})")
        parts = [f"was ahead at fraction {', '.join(groups['ahead'])}" if groups["ahead"]
                 else "was ahead at no fraction"]
        if groups["behind"]:
            parts.append(f"behind at {', '.join(groups['behind'])}")
        if groups["equal"]:
            parts.append(f"made about no difference at {', '.join(groups['equal'])}")
        text = (f"**Pretraining with {arm}** " + "; ".join(parts) + " (best validation macro-F1, pretrained minus "
                f"scratch; differences within {EQUAL_WITHIN} count as no difference).")
        if pending:
            text += f" Not comparable yet at fraction {', '.join(pending)} (runs missing or unfinished)."
        ordered = [diffs[f] for f in sorted(diffs, reverse=True)]  # most labels first
        steps = [b - a for a, b in zip(ordered, ordered[1:])]
        if steps and all(d > EQUAL_WITHIN for d in steps):
            text += " The gain grows as the label budget shrinks."
        elif steps and all(d < -EQUAL_WITHIN for d in steps):
            text += " The gain shrinks as the label budget shrinks."
        text += _significance_note(summary, arm)
        cost = summary["stage_times_s"].get(f"pretrain-{arm}") or (summary["pretext"].get(arm) or {}).get("wall_time_s")
        if cost:
            text += f" Pretraining cost {_duration(cost)} once, shared by all fractions."
        out.append(text)
    return out


def _interval(ci: list[float], sign: bool = False) -> str:
    return f"[{_num(ci[0], 'metric', sign)}, {_num(ci[1], 'metric', sign)}]"


def evaluation_conclusions(evaluation: dict[str, Any], metric: str = "f1_macro") -> list[str]:
    """Per protocol and pretext: where the paired 95% interval says better or worse, where it does
    not, and where one seed leaves the difference untested."""
    out = []
    for protocol, by_f in evaluation["vs_baseline"].items():
        for method in dict.fromkeys(m for d in by_f.values() for m in d):
            groups: dict[str, list[str]] = {"higher": [], "lower": [], "not": [], "untested": []}
            for f, d in by_f.items():
                c = d.get(method, {}).get(metric)
                if c is None:
                    continue
                diff = _num(c["difference"], "metric", sign=True)
                if c["significant"] is None:
                    groups["untested"].append(f"{f} ({diff})")
                else:
                    key = "not" if not c["significant"] else "higher" if c["difference"] > 0 else "lower"
                    groups[key].append(f"{f} ({diff}, 95% CI {_interval(c['ci95'], True)}, {c['n']} seeds)")
            parts = [f"significantly higher at fraction {', '.join(groups['higher'])}" if groups["higher"] else "",
                     f"significantly lower at fraction {', '.join(groups['lower'])}" if groups["lower"] else "",
                     f"no significant difference at fraction {', '.join(groups['not'])}" if groups["not"] else "",
                     f"differences at fraction {', '.join(groups['untested'])} come from one seed, so no confidence "
                     "interval can be computed and none is called significant" if groups["untested"] else ""]
            out.append(f"**{PROTOCOLS[protocol]}, {method} vs {baseline_name(protocol)}** ({NAMES[metric]}): "
                       + "; ".join(p for p in parts if p) + ".")
    return out


def _significance_note(summary: dict[str, Any], arm: str) -> str:
    """Which best-macro-F1 differences of `arm` the paired interval supports, or that none was tested."""
    cmp = {f: c[arm]["f1_macro"] for f, c in summary["comparison"].items() if arm in c and "f1_macro" in c[arm]}
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


# ----------------------------------------------------------------------------------------------
# One document, rendered as markdown and as self-contained HTML


class Doc:
    """Report content as blocks, so report.md and report.html come from one source."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: Iterable[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def figure(self, name: str, caption: str) -> None:
        self.blocks.append(("figure", (name, caption)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        out = []
        for kind, b in self.blocks:
            if kind == "heading":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "para":
                out.append(b)
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in b))
            elif kind == "table":
                header, rows = b
                cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                out.append("\n".join(["| " + " | ".join(map(cell, header)) + " |",
                                      "|" + "|".join(["---"] * len(header)) + "|",
                                      *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]))
            elif kind == "figure":
                out.append(f"![{b[1]}](figures/{b[0]})\n\n*{b[1]}*")
            elif kind == "code":
                out.append(f"```\n{b}\n```")
        return "\n\n".join(out) + "\n"

    def html(self, figures: Path, title: str) -> str:
        out = []
        for kind, b in self.blocks:
            if kind == "heading":
                out.append(f"<h{b[0]}>{_inline(b[1])}</h{b[0]}>")
            elif kind == "para":
                out.append(f"<p>{_inline(b)}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>")
            elif kind == "table":
                header, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header)
                           + "</tr></thead><tbody>"
                           + "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                           + "</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode((figures / b[0]).read_bytes()).decode()
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[1])}">'
                           f"<figcaption>{_inline(b[1])}</figcaption></figure>")
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(b)}</code></pre>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                f"</title><style>{CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;"
       "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}figcaption{font-style:italic;"
       "color:#555}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:0.85em}code{background:#f6f6f6}")


def _inline(text: str) -> str:
    """The little inline markdown the report uses (**bold**, `code`) as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


# ----------------------------------------------------------------------------------------------
# The report


TABLE_ROWS = (  # label, quantity, epoch quantity (shown in brackets), kind
    ("best val macro-F1 (epoch)", "f1_macro", "f1_macro_epoch", "metric"),
    ("best val macro precision (epoch)", "precision_macro", "precision_macro_epoch", "metric"),
    ("best val macro recall (epoch)", "recall_macro", "recall_macro_epoch", "metric"),
    ("best val accuracy (epoch)", "accuracy", "accuracy_epoch", "metric"),
    ("lowest val loss (epoch)", "loss", "loss_epoch", "metric"),
    ("final val macro-F1", "final_f1_macro", None, "metric"),
    ("test macro-F1", "test_f1_macro", None, "metric"),
    ("test accuracy", "test_accuracy", None, "metric"),
    (f"epochs to {FRACTION_OF_BEST:.0%} of best macro-F1", "time_to_95_epoch", None, "epoch"),
    (f"wall time to {FRACTION_OF_BEST:.0%} of best macro-F1 (s)", "time_to_95_wall_time_s", None, "seconds"),
    ("plateau epoch", "plateau_epoch", None, "epoch"),
    ("train − val accuracy, last epoch", "gap_accuracy", None, "metric"),
    ("val − train loss, last epoch", "gap_loss", None, "metric"),
    ("train loss after epoch 1", "train_loss_first_epoch", None, "metric"),
    ("mean train loss over epochs", "train_loss_mean", None, "metric"),
    ("epochs", "epochs", None, "epoch"),
    ("wall time (s)", "wall_time_s", None, "seconds"),
    ("mean images/s", "images_per_s", None, "rate"),
)
DIGITS = {"metric": 4, "epoch": 1, "seconds": 1, "rate": 0}


def _num(v: float, kind: str, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    digits = 0 if kind == "epoch" and float(v).is_integer() else DIGITS[kind]
    v = round(v, digits) + 0.0  # + 0.0: no "-0.0" for a difference that rounds to zero
    return f"{v:{'+' if sign else ''}.{digits}f}"


def _cell(agg: dict[str, Any] | None, kind: str) -> str:
    """mean ± std over seeds (just the value for one seed)."""
    if agg is None:
        return "–"
    return _num(agg["mean"], kind) + (f" ± {_num(agg['std'], kind)}" if agg["std"] is not None else "")


def _duration(seconds: float) -> str:
    """14 s, 13 min 32 s, 2 h 05 min: readable at every scale a study runs at."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


def fraction_table(summary: dict[str, Any], fraction: float, arms: list[str]) -> tuple[list[str], list[list[str]]]:
    """Rows = quantities; columns = arms, then pretrained minus scratch for each pretext arm."""
    f = fraction_key(fraction)
    agg, cmp = summary["aggregate"].get(f, {}), summary["comparison"].get(f, {})
    arms = [a for a in arms if a in agg]
    diff_arms = [a for a in arms if a in cmp]
    header = ["quantity", *(f"{a} (n={agg[a]['f1_macro']['n']})" for a in arms),
              *(f"{a} − scratch" for a in diff_arms)]
    rows = []
    for label, q, q_epoch, kind in TABLE_ROWS:
        if not any(q in agg[a] for a in arms):
            continue
        row = [label]
        for a in arms:
            cell = _cell(agg[a].get(q), kind)
            if q_epoch and q_epoch in agg[a]:
                cell += f" (ep {_cell(agg[a][q_epoch], 'epoch')})"
            row.append(cell)
        for a in diff_arms:
            c = cmp[a].get(q)
            cell = _num(c["pretrained_minus_scratch"], kind, sign=True) if c else "–"
            if c and q_epoch and q_epoch in cmp[a]:
                cell += f" (ep {_num(cmp[a][q_epoch]['pretrained_minus_scratch'], 'epoch', sign=True)})"
            row.append(cell)
        rows.append(row)
    return header, rows


def _evaluation_cell(c: dict[str, Any] | None) -> str:
    """mean ± std [95% CI] over seeds; just the value for one seed."""
    if c is None:
        return "–"
    if c["ci95"] is None:
        return _num(c["mean"], "metric")
    return f"{_num(c['mean'], 'metric')} ± {_num(c['std'], 'metric')} {_interval(c['ci95'])}"


def _difference_cell(d: dict[str, Any] | None) -> str:
    """Paired difference with its interval and verdict, or why there is no verdict."""
    if d is None:
        return "–"
    if d["ci95"] is None:
        return f"{_num(d['difference'], 'metric', True)} (1 seed: no CI)"
    verdict = "**significant**" if d["significant"] else "not significant"
    return f"{_num(d['difference'], 'metric', True)} {_interval(d['ci95'], True)} {verdict}"


def evaluation_table(evaluation: dict[str, Any], metric: str, methods: list[str]) -> tuple[list[str], list[list[str]]]:
    """Rows = protocol x fraction; columns = methods, then each pretext minus the baseline."""
    cells, vs = evaluation["cells"], evaluation["vs_baseline"]
    present = {m for by_f in cells.values() for c in by_f.values() for m in c}
    methods = [m for m in methods if m in present]
    pretexts = [m for m in methods if m != "scratch"]
    header = ["protocol", "fraction", *("scratch / random init" if m == "scratch" else m for m in methods),
              *(f"{m} − baseline" for m in pretexts)]
    rows = []
    for protocol, by_f in cells.items():
        for f, c in by_f.items():
            d = vs.get(protocol, {}).get(f, {})
            rows.append([PROTOCOLS[protocol], f, *(_evaluation_cell(c.get(m, {}).get(metric)) for m in methods),
                         *(_difference_cell(d.get(m, {}).get(metric)) for m in pretexts)])
    return header, rows


def _examples_for(study: Study, images_of: dict[str, Tensor],
                  fraction: float) -> tuple[Tensor | None, dict[str, list[dict[str, Any]]]]:
    """examples.pt of the fraction, and each arm's predictions on them (its lowest finished seed)."""
    images, examples = None, {}
    for arm in study.arms:
        runs = sorted(study.finished(fraction, arm), key=lambda r: r.seed)
        if runs and runs[0].summary.get("examples"):
            examples[f"{arm} s{runs[0].seed}" if len({r.seed for r in study.runs}) > 1 else arm] = \
                runs[0].summary["examples"]
        if images is None:
            images = next((images_of[r.name] for r in runs if r.name in images_of), None)
    return images, examples


def _classes(study: Study) -> list[str]:
    ds = study.config.get("dataset") or {}
    if ds.get("classes"):
        return list(ds["classes"])
    return next((r.summary["classes"] for r in study.runs if r.finished and r.summary.get("classes")), [])


def write_report(study_dir: Path) -> Path:
    """Write report.md, report.html, figures/*.png and summary.json into the study folder; return report.md."""
    study = load_study(Path(study_dir))
    if not study.runs and not study.pretexts:
        raise UserError(f"{study_dir} holds no run with a finished epoch yet (no f*-*-s*/metrics.csv or "
                        "pretrain-*/metrics.csv); run the study first, or pass the study's folder")
    summary = summarize_study(study)
    fig_dir = study.path / "figures"
    doc = Doc()
    doc.heading(1, f"Does pretraining help? Study `{summary['study']}`")
    cfg, ds = study.config, study.config.get("dataset") or {}
    doc.para(f"Dataset **{ds.get('name', (cfg.get('data') or {}).get('source', 'unknown'))}**, backbone "
             f"**{cfg.get('backbone', '?')}**, label fractions {', '.join(f'{f:g}' for f in study.fractions)}, "
             f"seeds {', '.join(map(str, cfg.get('seeds', sorted({r.seed for r in study.runs}))))}, "
             f"pretext tasks {', '.join(a for a in study.arms if a != 'scratch') or 'none'}. Each fraction is "
             "fine-tuned from scratch and from the pretrained backbone with the same recipe"
             + ("; frozen backbones (pretrained and random init) are also read out by a linear probe and k-NN."
                if study.probes else "."))
    images_of = _read_examples(study)  # before _status, which lists the files that could not be read
    _status(doc, study, summary)
    _answer_section(doc, study, summary)
    _evaluation_section(doc, study, summary, fig_dir)
    _curves_section(doc, study, summary, fig_dir)
    _results_section(doc, study, summary)
    _examples_section(doc, study, images_of, fig_dir)
    _confusion_section(doc, study, fig_dir)
    _pretext_section(doc, study, summary, images_of, fig_dir)
    _setup_section(doc, study, summary)

    save_json(_finite(summary), study.path / "summary.json")
    markdown = doc.markdown()
    save_text(markdown, study.path / "report.md")
    save_text(doc.html(fig_dir, f"pretextlab report: {summary['study']}"), study.path / "report.html")
    # A figure of an earlier state of the study (say the confusion matrix of what was then the smallest
    # fraction) would otherwise stay in figures/ beside a report that no longer shows it, and be exported.
    shown = {b[0] for kind, b in doc.blocks if kind == "figure"}
    for stale in fig_dir.glob("*.png"):
        if stale.name not in shown:
            stale.unlink()
    log.info("wrote %s, %s and %s", study.path / "report.md", study.path / "report.html", fig_dir)
    return study.path / "report.md"


def _answer_section(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    pretext_arms = [a for a in study.arms if a != "scratch"]
    doc.heading(2, "Answer")
    doc.bullets(overall_conclusions(summary, pretext_arms, study.fractions))
    header = ["fraction", "labelled images", *(f"{a} best val macro-F1" for a in study.arms),
              *(f"{a} − scratch" for a in pretext_arms)]
    rows = []
    for f in study.fractions:
        fk = fraction_key(f)
        agg, cmp = summary["aggregate"].get(fk, {}), summary["comparison"].get(fk, {})
        n = next((s["n_train"] for s in summary["runs"].values() if s["fraction"] == f and s["n_train"]), None)
        rows.append([f"{f:g}", str(n or "–"), *(_cell(agg.get(a, {}).get("f1_macro"), "metric") for a in study.arms),
                     *(_num(cmp[a]["f1_macro"]["pretrained_minus_scratch"], "metric", True) if a in cmp else "–"
                       for a in pretext_arms)])
    doc.table(header, rows)


def _evaluation_section(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    ev = summary["evaluation"]
    doc.heading(2, "Every method under every evaluation protocol")
    if not ev["cells"]:
        doc.para("No finished fine-tuning run or probe yet.")
        return
    doc.para("Three ways to read out a backbone at each label fraction, all on the validation split and all "
             "with the labelled subset of that fraction and seed: **fine-tune** (the whole network trained; the "
             "baseline is training from scratch; numbers are the end-of-training metrics, no epoch picked on the "
             "validation split), **linear probe** (frozen backbone, BatchNorm statistics re-estimated on whole "
             "images; L2-regularised logistic regression fit by L-BFGS on cached features) and **k-NN** (k = 200, "
             "cosine similarity, temperature 0.07, Wu et al. 2018; the labelled subset is the memory bank). For "
             "the probes the baseline is the frozen random initialisation each seed's scratch run starts from. "
             "Pretrained backbones are pretrained once (first seed); seeds vary the label subset and the "
             f"initialisation, so intervals describe those, not pretraining. Rule: {ev['rule']}.")
    if max(c["n"] for by_f in ev["cells"].values() for cs in by_f.values() for m in cs.values()
           for c in m.values()) < 2:
        doc.para("Every cell comes from a single seed, so no confidence interval can be computed and no difference "
                 "is called significant; run the study with several seeds (e.g. --seeds 0,1,2) for intervals.")
    if any(c["n"] == 2 and c["ci95"] is not None for by_f in ev["vs_baseline"].values() for ms in by_f.values()
           for m in ms.values() for c in m.values()):
        doc.para(f"Caution: some intervals below rest on two seeds (each conclusion gives its number of seeds); "
                 f"{TWO_SEEDS}.")
    if not study.probes:
        doc.para("No probe results (probes.json) in this study yet: it predates the probe stages or has not reached "
                 "them. Re-running the study command adds them; finished runs are reused.")
    doc.bullets(evaluation_conclusions(ev))
    methods = study.arms
    for metric in ev["metrics"]:
        doc.para(f"Validation {NAMES[metric]}: mean ± std [95% CI] over seeds; differences are paired by seed.")
        doc.table(*evaluation_table(ev, metric, methods))
    fraction_figure(ev, methods, fig_dir / "f1_vs_fraction.png")
    doc.figure("f1_vs_fraction.png", "Validation macro-F1 vs label fraction (log scale), one panel per protocol; "
                                     "error bars are 95% t confidence intervals over seeds (none with one seed)")


def _curves_section(doc: Doc, study: Study, summary: dict[str, Any], fig_dir: Path) -> None:
    doc.heading(2, "Fine-tuning curves")
    if not study.runs:
        doc.para("No fine-tuning run has finished an epoch yet.")
        return
    loss_figure(study, summary, fig_dir / "loss.png")
    doc.figure("loss.png", "Training (dashed) and validation (solid) loss per epoch, scratch vs pretrained, "
                           "one panel per label fraction")
    eps = (study.config.get("train") or {}).get("label_smoothing")
    doc.para("The training loss is the mean over an epoch's augmented batches"
             + (f" and includes label smoothing ({eps})" if eps else "")
             + "; the validation loss is plain cross-entropy after the epoch, so their levels differ by "
               "construction and the loss gap in the tables is a relative measure. With several seeds, lines are "
               "means and bands span min to max.")
    metrics_figure(study, summary, fig_dir / "val_metrics.png")
    doc.figure("val_metrics.png", "Validation macro-F1, precision, recall and accuracy per epoch "
                                  "(rows: metric, columns: label fraction)")


def _results_section(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    doc.heading(2, "Results per label fraction")
    doc.para(f"Best = highest value over the epochs (lowest for the loss), with its epoch. Rules: {T95_RULE}; "
             f"{PLATEAU_RULE}. Gaps are taken at the last epoch. With several seeds cells show mean ± sample std "
             f"over seeds (n per arm in the header) and differences are differences of the means. Differences "
             f"within {EQUAL_WITHIN} are called about equal. Only finished runs count.")
    for f in study.fractions:
        doc.heading(3, fraction_title(study, summary, f))
        header, rows = fraction_table(summary, f, study.arms)
        if rows:
            doc.table(header, rows)
        cmp = summary["comparison"].get(fraction_key(f), {})
        waiting = [n for n in [*study.missing, *(r.name for r in study.runs if not r.finished)]
                   if (m := RUN_NAME.match(n)) and float(m["fraction"]) == f]
        notes = [s for a in study.arms if a in cmp for s in fraction_conclusions(cmp[a], a)]
        if waiting:
            notes.append(f"Waiting for {', '.join(waiting)} (missing or still training).")
        if not cmp:
            notes.append("No comparison yet: it needs finished scratch and pretrained runs.")
        doc.bullets(notes)


def _finite(obj: Any) -> Any:
    """NaN/inf (a column a run did not log) as null: summary.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _status(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    st = summary["status"]
    if not st["in_progress"] and not st["missing"] and not st["missing_probes"] and not study.problems:
        doc.para(f"All runs finished ({len(st['finished'])} fine-tuning, {len(study.pretexts)} pretext).")
        return
    doc.para("**This study is incomplete**; the report shows what exists.")
    items = []
    if st["missing"]:
        items.append("Missing (no finished epoch): " + ", ".join(f"`{n}`" for n in st["missing"]))
    if st["in_progress"]:
        items.append("In progress (curves only): " + ", ".join(
            f"`{r['run']}` (epoch {r['epochs']}" + (f" of {r['planned_epochs']})" if r.get("planned_epochs") else ")")
            for r in st["in_progress"]))
    if st["missing_probes"]:
        items.append("Probes not run yet: " + ", ".join(f"`{n}`" for n in st["missing_probes"]))
    items += [f"Note: {p}" for p in study.problems]
    doc.bullets(items)


def _examples_section(doc: Doc, study: Study, images_of: dict[str, Tensor], fig_dir: Path) -> None:
    doc.heading(2, "Predictions on validation examples")
    classes = _classes(study)
    drawn = False
    for f in study.fractions:
        images, examples = _examples_for(study, images_of, f)
        if images is None or not examples:
            continue
        name = f"examples_f{f:g}.png"
        examples_figure(images, examples, classes, fig_dir / name)
        doc.figure(name, f"Fraction {f:g}: validation images (the same in every run) with the true label and each "
                         "arm's prediction and confidence (green right, red wrong)")
        drawn = True
    if not drawn:
        doc.para("No finished run has example predictions (examples.pt and summary.json) yet.")


def _confusion_section(doc: Doc, study: Study, fig_dir: Path) -> None:
    finished_fractions = sorted({r.fraction for r in study.runs if r.finished and r.summary.get("confusion_val")})
    doc.heading(2, "Confusion matrices at the smallest label fraction")
    if not finished_fractions:
        doc.para("No finished run has a confusion matrix yet.")
        return
    f = finished_fractions[0]
    matrices = {}
    for arm in study.arms:
        ms = [np.array(r.summary["confusion_val"], dtype=float) for r in study.finished(f, arm)
              if r.summary.get("confusion_val")]
        if ms:
            matrices[arm] = sum(ms)
    name = f"confusion_f{f:g}.png"
    confusion_figure(matrices, _classes(study), f"fraction {f:g}", fig_dir / name)
    doc.figure(name, f"Validation confusion matrices at fraction {f:g}, each row normalised to 1 (rows: true "
                     "class, columns: predicted)" + (", summed over seeds" if len(study.finished(f)) > len(matrices)
                                                     else ""))


def _pretext_section(doc: Doc, study: Study, summary: dict[str, Any], images_of: dict[str, Tensor],
                     fig_dir: Path) -> None:
    doc.heading(2, "What the pretext task taught the backbone")
    if not study.pretexts:
        doc.para("No pretext run has finished an epoch yet.")
        return
    ps = summary["pretext"]
    tasks = list(ps)
    extras = sorted({k for t in tasks for k in ps[t]["best"] if k not in ("loss", "accuracy")})
    rows = [["status", *(ps[t]["status"] for t in tasks)],
            ["epochs", *(str(ps[t]["epochs"]) for t in tasks)],
            ["chance accuracy", *(_num(ps[t]["chance"], "metric") for t in tasks)]]
    for k in ("accuracy", *extras):
        rows.append([f"best held-out {k} (epoch)", *(
            f"{_num(ps[t]['best'][k]['value'], 'metric')} (ep {ps[t]['best'][k]['epoch']})" if k in ps[t]["best"]
            else "–" for t in tasks)])
    for col in ("train_accuracy", "val_accuracy", "train_loss", "val_loss"):
        rows.append([f"last-epoch {col.replace('_', ' ')}", *(_num(ps[t]["last"].get(col), "metric") for t in tasks)])
    for key in sorted({k for t in tasks for k in ps[t]["knn_accuracy"]}):
        rows.append([f"k-NN accuracy of frozen features, {key} backbone",
                     *(_num(ps[t]["knn_accuracy"].get(key), "metric") for t in tasks)])
    rows.append(["wall time (s)", *(_num(ps[t]["wall_time_s"], "seconds") for t in tasks)])
    rows.append(["mean images/s", *(_num(ps[t]["images_per_s"], "rate") for t in tasks)])
    doc.table(["quantity", *tasks], rows)
    for task in tasks:
        if ps[task].get("remade"):
            doc.para(ps[task]["remade"])

    for task, run in study.pretexts.items():
        doc.heading(3, f"Pretext: {task}")
        pretext_figure(run, ps[task]["chance"], fig_dir / f"pretext_{task}.png")
        doc.figure(f"pretext_{task}.png", f"{task}: pretext loss and accuracy, train (dashed) and held-out images "
                                          "(solid), with the chance level")
        samples = load_samples(run.path)
        if samples is not None and len(samples.get("first", [])):
            samples_figure(samples, task, fig_dir / f"pretext_samples_{task}.png")
            doc.figure(f"pretext_samples_{task}.png", f"{task} inputs: {SAMPLE_CAPTIONS.get(task, 'held-out examples')}")
        else:
            doc.para(f"No pretext samples (samples.pt) in `pretrain-{task}/`.")
        _backbone_views(doc, study, run, images_of, fig_dir)


def _backbone_views(doc: Doc, study: Study, run: PretextRun, images_of: dict[str, Tensor], fig_dir: Path) -> None:
    """First-layer filters and early feature maps: pretrained vs randomly initialised (seed 0)."""
    task = run.task
    if not (run.path / "checkpoint.pt").exists():
        doc.para(f"No checkpoint in `pretrain-{task}/`, so no filters or feature maps.")
        return
    try:
        pretrained, meta, source = load_pretext_backbone(run)
    except Exception as e:  # an unreadable or mismatched checkpoint is noted, not fatal
        doc.para(f"Could not load the backbone of `pretrain-{task}/` ({type(e).__name__}: {e}).")
        return
    doc.para(f"Pretrained weights: `pretrain-{task}/{source}`; the reference is the same architecture freshly "
             "initialised with seed 0. Feature maps are computed in eval mode (running BatchNorm statistics).")
    nets = {f"pretrained ({task})": pretrained, "random init (seed 0)": random_backbone(meta["backbone"],
                                                                                       meta["channels"])}
    filters_figure(nets, fig_dir / f"filters_{task}.png")
    doc.figure(f"filters_{task}.png", "First convolution's filters, each min-max scaled on its own"
               + (" (RGB)" if meta["channels"] == 3 else " (mean over input channels)"))
    if not images_of:
        doc.para("No example image (examples.pt) yet, so no feature maps.")
        return
    image = next(iter(images_of.values()))[0]
    x = normalize(image[None], torch.tensor(meta["mean"]), torch.tensor(meta["std"]))
    maps = {label: early_features(net, x) for label, net in nets.items()}
    feature_maps_figure(image, maps, fig_dir / f"feature_maps_{task}.png")
    doc.figure(f"feature_maps_{task}.png", "Feature maps of one validation image (first 16 channels, each "
                                           "min-max scaled) after the first conv stage and the first block")


def _read_examples(study: Study) -> dict[str, Tensor]:
    """Each run's examples.pt (uint8 validation images), read once, in the study's run order; an unreadable
    file becomes a note in the report's status and the figures use the next run's."""
    images_of: dict[str, Tensor] = {}
    for run in study.runs:
        path = run.path / "examples.pt"
        if not path.exists():
            continue
        try:
            images_of[run.name] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unreadable file: noted, the report goes on
            study.problems.append(f"{run.name}/examples.pt: {e}")
    return images_of


def _setup_section(doc: Doc, study: Study, summary: dict[str, Any]) -> None:
    cfg = study.config
    doc.heading(2, "Setup")
    data, ds = cfg.get("data") or {}, cfg.get("dataset") or {}
    finished = [r.summary for r in study.runs if r.finished]
    pre_cfg = next((read_json(p.path / "config.json") for p in study.pretexts.values()), {})
    n_train = {s["fraction"]: s["n_train"] for s in summary["runs"].values() if s["n_train"]}
    n_val = ds.get("n_val") or pre_cfg.get("n_val") or next((s.get("n_val") for s in finished), None)
    n_pool = ds.get("n_pool") or pre_cfg.get("n_pool")
    classes = _classes(study)
    rows = [
        ["data source", str(data.get("source", "–"))],
        ["dataset", str(ds.get("name", "–"))],
        ["classes", f"{len(classes)}: {', '.join(classes)}" if classes else "–"],
        ["image size, channels", f"{ds.get('image_size', '–')}, {ds.get('channels', '–')}"],
        ["training pool (what pretext tasks see, without labels)", str(n_pool or "–")],
        ["validation images", f"{n_val or '–'} (val_fraction {data.get('val_fraction', '–')}, "
                              f"split_seed {data.get('split_seed', '–')})"],
        ["labelled images per fraction", ", ".join(f"{f:g}: {n}" for f, n in sorted(n_train.items(), reverse=True))
         or "–"],
        ["seeds", ", ".join(map(str, cfg.get("seeds", []))) or "–"],
        ["preset, backbone", f"{cfg.get('preset', '–')}, {cfg.get('backbone', '–')}"],
    ]
    rows += [[k.replace("_", " "), str(ds[k])] for k in ("n_train_total", "n_test", "skipped_files") if k in ds]
    if cfg.get("epochs_per_fraction"):
        rows.append(["fine-tuning epochs per fraction",
                     ", ".join(f"{f}: {e}" for f, e in cfg["epochs_per_fraction"].items())])
    if cfg.get("budget_rule"):
        rows.append(["budget rule", str(cfg["budget_rule"])])
    if cfg.get("pretrain_epochs"):
        rows.append(["pretraining epochs per pretext task",
                     ", ".join(f"{t}: {e}" for t, e in cfg["pretrain_epochs"].items())])
    doc.table(["item", "value"], rows)
    machine = cfg.get("machine") or {}
    if machine:
        doc.para("Machine and library versions:")
        doc.table(["item", "value"], [[k, "none" if v is None else str(v)] for k, v in machine.items()])
    for m in cfg.get("earlier_machines") or []:
        doc.para("Parts of the study ran earlier on another machine or setup: "
                 + ", ".join(f"{k} {v}" for k, v in m.items() if k in ("cpu", "cpu_capability", "threads", "torch", "cuda")))
    times = summary["stage_times_s"]
    runs = {r.name: r.history for r in study.runs} | {f"pretrain-{t}": p.history for t, p in study.pretexts.items()}
    rows = []
    for stage in dict.fromkeys([*times, *runs]):
        h = runs.get(stage, [])
        ips = column(h, "images_per_s")
        rows.append([stage, _num(times.get(stage), "seconds"),
                     _duration(times[stage]) if stage in times else "–", str(len(h) or "–"),
                     _num(h[-1].get("wall_time_s") if h else None, "seconds"),
                     _num(statistics.fmean(ips) if ips else None, "rate")])
    doc.para("Run time per stage (stage time from study.json, including evaluation and start-up; training time "
             "and images/s from each run's metrics.csv):")
    doc.table(["stage", "stage time (s)", "stage time", "epochs", "training time (s)", "mean images/s"], rows)
    total = sum(times.values())
    if total:
        doc.para(f"Total: {_duration(total)}.")
    doc.para("Full configuration (study.json):")
    doc.code(json.dumps(cfg, indent=2, default=str) if cfg else "(no study.json)")
