"""The report's tables, as (header, rows) of text cells built from summary.json and the study's folders.

With several seeds a cell is mean ± std over seeds (evaluation cells add the 95% interval) and a
difference is pretrained minus scratch, paired by seed; "–" marks what a study has not produced yet.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..layout import SCRATCH
from .answers import value_verdict
from .formatting import duration, interval, labels_at, mean_std, number
from .records import Dataset, RunConfig
from .render import md
from .results import PER_SEED, PROTOCOLS, Study, class_names, column
from .summary import fraction_key

Table = tuple[list[str], list[list[str]]]
STATES = {"plateau": "plateaued", "rising": "still improving", "unsettled": "not settled", "short": "too short"}

TABLE_ROWS = (  # label, quantity, step quantity (shown in brackets), kind
    ("final val macro-F1 (end of training)", "final_f1_macro", None, "metric"),
    ("final val macro precision", "final_precision_macro", None, "metric"),
    ("final val macro recall", "final_recall_macro", None, "metric"),
    ("final val accuracy", "final_accuracy", None, "metric"),
    ("final val loss", "final_loss", None, "metric"),
    ("test macro-F1 (final model)", "test_f1_macro", None, "metric"),
    ("test macro precision", "test_precision_macro", None, "metric"),
    ("test macro recall", "test_recall_macro", None, "metric"),
    ("test accuracy", "test_accuracy", None, "metric"),
    ("test loss", "test_loss", None, "metric"),
    ("final val mean IoU (end of training)", "final_miou", None, "metric"),  # segmentation
    ("final val pixel accuracy", "final_pixel_accuracy", None, "metric"),
    ("final val mean Dice", "final_dice", None, "metric"),
    ("test mean IoU (final model)", "test_miou", None, "metric"),
    ("test pixel accuracy", "test_pixel_accuracy", None, "metric"),
    ("test mean Dice", "test_dice", None, "metric"),
    ("secondary: best val macro-F1 over the evaluations (step)", "f1_macro", "f1_macro_step", "metric"),
    ("secondary: best val mean IoU over the evaluations (step)", "miou", "miou_step", "metric"),
    ("secondary: best val pixel accuracy (step)", "pixel_accuracy", "pixel_accuracy_step", "metric"),
    ("secondary: best val accuracy (step)", "accuracy", "accuracy_step", "metric"),
    ("secondary: lowest val loss (step)", "loss", "loss_step", "metric"),
    ("train − val accuracy, last evaluation", "gap_accuracy", None, "metric"),
    ("val − train loss, last evaluation", "gap_loss", None, "metric"),
    ("optimizer steps trained", "steps", None, "step"),
    ("evaluations", "evaluations", None, "step"),
    ("wall time (s)", "wall_time_s", None, "seconds"),
    ("mean images/s", "images_per_s", None, "rate"),
)


def fraction_table(summary: dict[str, Any], fraction: float, arms: list[str]) -> Table:
    """Rows = quantities; columns = arms, then pretrained minus scratch for each pretext arm. The headline
    quantity's row is marked primary."""
    f = fraction_key(fraction)
    agg, cmp = summary["aggregate"].get(f, {}), summary["comparison"].get(f, {})
    arms = [a for a in arms if a in agg]
    diff_arms = [a for a in arms if a in cmp]
    n = {a: max(v["n"] for v in agg[a].values()) for a in arms}
    header = ["quantity", *(f"{md(a)} (n={n[a]})" for a in arms), *(f"{md(a)} − scratch" for a in diff_arms)]
    rows = []
    for label, q, q_step, kind in TABLE_ROWS:
        if not any(q in agg[a] for a in arms):
            continue
        row = [f"**{label} (primary)**" if q == summary["headline"]["quantity"] else label]
        for a in arms:
            cell = mean_std(agg[a].get(q), kind)
            if q_step and q_step in agg[a]:
                cell += f" (step {mean_std(agg[a][q_step], 'step')})"
            row.append(cell)
        for a in diff_arms:
            c = cmp[a].get(q)
            cell = paired_cell(c, kind) if c else "–"
            if c and q_step and q_step in cmp[a]:
                cell += f" (step {number(cmp[a][q_step]['pretrained_minus_scratch'], 'step', sign=True)})"
            row.append(cell)
        rows.append(row)
    return header, rows


def _diff(c: dict[str, Any] | None, kind: str) -> str:
    """A paired difference with its 95% interval (none for one seed)."""
    if not c:
        return "–"
    text = number(c["pretrained_minus_scratch"], kind, True)
    return text + (f" {interval(c['paired_ci95'], True, kind)}" if c.get("paired_ci95") is not None else "")


def answers_table(summary: dict[str, Any], fraction: float, arm: str) -> Table | None:
    """The four questions for one fraction and pretrained arm (summary.json "answers"), every number the
    sentences use: rows = each curve's levels, the plateau, the final and highest values; columns = the arm's
    mean, scratch's, the paired difference [95% CI] and the verdict."""
    entry = (summary.get("answers") or {}).get(fraction_key(fraction), {}).get(arm)
    if not entry:
        return None
    o, n, metric = entry["over_seeds"], len(entry["seeds"]), entry.get("metric_name", "macro-F1")
    names = {"train_loss": "training loss (smoothed)", "val_loss": "validation loss", "metric": f"val {metric}"}
    rows = []
    for key, name in names.items():
        if not o[key]:
            continue
        for lv in o[key]["levels"]:
            cells = [number(lv[a], "step") + ("" if lv["reached"][a] == n else f" ({lv['reached'][a]} of {n} seeds)")
                     if lv[a] is not None else "never" for a in ("pretrained", "scratch")]
            rows.append([f"{name}: step to {lv['share']:.0%} of the way ({number(lv['level'], 'metric')})", *cells,
                         _diff(lv["difference"], "step"), lv["verdict"]])
        ahead = o[key]["ahead"]
        rows.append([f"{name}: share of the steps where it is better", f"{ahead['pretrained']:.0%}",
                     f"{ahead['scratch']:.0%}", "–", "–"])
    p = o["plateau"]
    rows.append(["plateau: step (seeds that reached it)",
                 *(f"{number(p[a]['step'], 'step')} ({p[a]['reached']} of {n})" if p[a]["step"] is not None
                   else f"none (0 of {n})" for a in ("pretrained", "scratch")), _diff(p["difference"], "step"),
                 p["verdict"]])
    for label, q in ((f"final val {metric}", "final"), (f"highest val {metric}", "max"), (f"test {metric}", "test")):
        if c := o["end"].get(q):
            rows.append([label, number(c["pretrained"], "metric"), number(c["scratch"], "metric"), _diff(c, "metric"),
                         value_verdict(c)])
    return ["question", md(arm), "scratch", f"{md(arm)} − scratch" + (f" [95% CI], {n} seeds" if n > 1 else ""),
            "verdict"], rows


def _evaluation_cell(c: dict[str, Any] | None) -> str:
    """mean ± std [95% CI] over seeds; just the value for one seed."""
    if c is None:
        return "–"
    if c["ci95"] is None:
        return number(c["mean"], "metric")
    return f"{number(c['mean'], 'metric')} ± {number(c['std'], 'metric')} {interval(c['ci95'])}"


def _difference_cell(d: dict[str, Any] | None) -> str:
    """Paired difference with its interval and verdict, or why there is no verdict."""
    if d is None:
        return "–"
    if d["ci95"] is None:
        return f"{number(d['difference'], 'metric', True)} (1 seed: no CI)"
    verdict = "**significant**" if d["significant"] else "not significant"
    return f"{number(d['difference'], 'metric', True)} {interval(d['ci95'], True)} {verdict}"


def evaluation_table(evaluation: dict[str, Any], metric: str, methods: list[str]) -> Table:
    """Rows = protocol x fraction; columns = methods, then each pretext minus the baseline."""
    cells, vs = evaluation["cells"], evaluation["vs_baseline"]
    present = {m for by_f in cells.values() for c in by_f.values() for m in c}
    methods = [m for m in methods if m in present]
    pretexts = [m for m in methods if m != SCRATCH]
    header = ["protocol", "fraction", *("scratch / random init" if m == SCRATCH else md(m) for m in methods),
              *(f"{md(m)} − baseline" for m in pretexts)]
    rows = []
    for protocol, by_f in cells.items():
        for f, c in by_f.items():
            d = vs.get(protocol, {}).get(f, {})
            rows.append([PROTOCOLS[protocol], f, *(_evaluation_cell(c.get(m, {}).get(metric)) for m in methods),
                         *(_difference_cell(d.get(m, {}).get(metric)) for m in pretexts)])
    return header, rows


def answer_table(study: Study, summary: dict[str, Any]) -> Table:
    """Rows = fractions; columns = labelled images, each arm's headline number (the final model's test score in
    the task's primary metric, else its validation score), pretrained minus scratch."""
    pretext_arms = [a for a in study.arms if a != SCRATCH]
    q = summary["headline"]["quantity"]
    name = study.scoring.name
    label = f"test {name}" if summary["headline"]["split"] == "test" else f"final val {name}"
    header = ["fraction", "labelled images", *(f"{md(a)} {label}" for a in study.arms),
              *(f"{md(a)} − scratch" for a in pretext_arms)]
    rows = []
    for f in study.fractions:
        fk = fraction_key(f)
        agg, cmp = summary["aggregate"].get(fk, {}), summary["comparison"].get(fk, {})
        rows.append([f"{f:g}", str(labels_at(summary, f) or "–"),
                     *(mean_std(agg.get(a, {}).get(q), "metric") for a in study.arms),
                     *(paired_cell(cmp[a][q], "metric") if q in cmp.get(a, {}) else "–" for a in pretext_arms)])
    return header, rows


def paired_cell(c: dict[str, Any], kind: str) -> str:
    """A paired difference; where the arms' means cover different seeds (a study part-way), over how many
    seeds the difference is paired, so that it is not read as the difference of the two means beside it."""
    text = number(c["pretrained_minus_scratch"], kind, sign=True)
    n = c.get("n_seeds") or []
    k = c["paired_n"]
    return text + (f" (paired over {k} seed{'s' if k != 1 else ''})" if n and len(set(n)) > 1 else "")


def pretext_table(summary: dict[str, Any]) -> Table:
    """Rows = the pretext runs' quantities (chance, best held-out metrics, last epoch, k-NN, speed); columns = tasks."""
    ps = summary["pretext"]
    tasks = list(ps)
    extras = sorted({k for t in tasks for k in ps[t]["best"] if k not in ("loss", "accuracy")})
    rows = [["status", *(ps[t]["status"] for t in tasks)],
            ["epochs", *(str(ps[t]["epochs"]) for t in tasks)],
            ["chance accuracy", *(number(ps[t]["chance"], "metric") for t in tasks)]]
    for k in ("accuracy", *extras):
        rows.append([f"best held-out {md(k)} (epoch)", *(
            f"{number(ps[t]['best'][k]['value'], 'metric')} (ep {ps[t]['best'][k]['epoch']})" if k in ps[t]["best"]
            else "–" for t in tasks)])
    for col in ("train_accuracy", "val_accuracy", "train_loss", "val_loss"):
        rows.append([f"last-epoch {col.replace('_', ' ')}", *(number(ps[t]["last"].get(col), "metric") for t in tasks)])
    for key in sorted({k for t in tasks for k in ps[t]["knn_accuracy"]}):
        rows.append([f"k-NN accuracy of frozen features, {md(key)} backbone",
                     *(number(ps[t]["knn_accuracy"].get(key), "metric") for t in tasks)])
    rows.append(["wall time (s)", *(number(ps[t]["wall_time_s"], "seconds") for t in tasks)])
    rows.append(["mean images/s", *(number(ps[t]["images_per_s"], "rate") for t in tasks)])
    if any(ps[t].get("seed") is not None or ps[t].get("pretrainings", 1) > 1 for t in tasks):
        rows.insert(0, ["shown pretraining", *(md(ps[t]["shown"], code=True) for t in tasks)])
        rows.append(["pretrainings (one per seed)", *(str(ps[t]["pretrainings"]) for t in tasks)])
        rows.append(["every pretraining's stage time, summed (s)",
                     *(number(ps[t]["total_cost_s"], "seconds") for t in tasks)])
    return ["quantity", *map(md, tasks)], rows


def setup_table(study: Study, summary: dict[str, Any]) -> Table:
    """The data, splits, label budgets, seeds and recipe the study ran with."""
    cfg = study.config
    data, ds = cfg.data, cfg.dataset or Dataset()
    finished = [r.summary for r in study.runs if r.finished]
    pre_cfg = next((p.config for p in study.pretexts.values()), RunConfig())
    seeds = study.seeds
    n_train = {s["fraction"]: s["n_train"] for s in summary["runs"].values() if s["n_train"]}
    n_val = ds.n_val or pre_cfg.n_val or next((s.n_val for s in finished), None)
    n_pool = ds.n_pool or pre_cfg.n_pool
    classes = class_names(study)
    rows = [
        ["data source", md(_shown(data.source))],
        ["dataset", md(_shown(ds.name))],
        ["classes", f"{len(classes)}: {', '.join(map(md, classes))}" if classes else "–"],
        ["image size, channels", md(f"{_shown(ds.image_size)}, {_shown(ds.channels)}")],
        ["training pool (what pretext tasks see, without labels)", md(n_pool or "–")],
        ["validation images", f"{md(n_val or '–')} (val_fraction {md(_shown(data.val_fraction))}, "
                              f"split_seed {md(_shown(data.split_seed))})"],
        ["labelled images per fraction", ", ".join(f"{f:g}: {n}" for f, n in sorted(n_train.items(), reverse=True))
         or "–"],
        ["seeds", ", ".join(map(str, cfg.seeds)) or "–"],
        ["pretraining", "per seed: each seed pretrains its own backbone" if study.pretraining == PER_SEED
         else f"shared: one per task (seed {seeds[0] if seeds else '–'}) for every seed"],
        ["precision", precision_cell(summary["precision"])],
        ["preset, backbone", md(f"{_shown(cfg.preset)}, {_shown(cfg.backbone)}")],
    ]
    rows += [[k.replace("_", " "), md(v)] for k, v in (("n_train_total", ds.n_train_total), ("n_test", ds.n_test),
                                                       ("skipped_files", ds.skipped_files)) if v is not None]
    if data.test_source:
        rows.append(["test data source", md(data.test_source)])
    if cfg.epochs_per_fraction:
        rows.append(["fine-tuning epochs per fraction",
                     ", ".join(f"{md(f)}: {md(e)}" for f, e in cfg.epochs_per_fraction.items())])
    if cfg.budget_rule:
        rows.append(["budget rule", md(cfg.budget_rule)])
    if cfg.pretrain_epochs:
        rows.append(["pretraining epochs per pretext task",
                     ", ".join(f"{md(t)}: {md(e)}" for t, e in cfg.pretrain_epochs.items())])
    return ["item", "value"], rows


def _shown(value: Any) -> Any:
    """A setting as the setup table shows it: "–" where the study did not record it."""
    return "–" if value is None else value


def precision_cell(precision: dict[str, Any]) -> str:
    """The study's precision, or (a study.json from before it was recorded) what the runs resolved to."""
    counts: dict[str, int] = {}
    for p in precision["runs"].values():
        counts[p] = counts.get(p, 0) + 1
    if precision["study"]:
        return f"{md(precision['study'])} (decided once for the study)"
    if len(counts) == 1:
        return f"{md(next(iter(counts)))} (every run's config.json; study.json does not record it)"
    return ", ".join(f"{md(p)} ({n} runs)" for p, n in counts.items()) or "–"


def stage_table(study: Study, summary: dict[str, Any]) -> Table:
    """Each stage's time from study.json beside its training time and images/s from its metrics.csv."""
    times = summary["stage_times_s"]
    runs = {r.name: r.history for r in study.runs} | {p.folder: p.history for ps in study.pretrainings.values()
                                                      for p in ps}
    rows = []
    for stage in dict.fromkeys([*times, *runs]):
        h = runs.get(stage, [])
        ips = column(h, "images_per_s")
        rows.append([md(stage), number(times.get(stage), "seconds"),
                     duration(times[stage]) if stage in times else "–", str(len(h) or "–"),
                     number(h[-1].get("wall_time_s") if h else None, "seconds"),
                     number(statistics.fmean(ips) if ips else None, "rate")])
    return ["stage", "stage time (s)", "stage time", "evaluations", "training time (s)", "mean images/s"], rows


def replication_table(replication: dict[str, Any]) -> Table:
    """Rows = the original's verdicts; columns = both studies' paired differences with their intervals and
    verdicts, and whether the original's held."""
    rows = []
    for v in replication["verdicts"]:
        held = {True: "**held**", False: "**not held**", None: "not tested"}[v["held"]]
        rows.append([PROTOCOLS.get(v["protocol"], md(v["protocol"])), md(v["fraction"]), md(v["method"]),
                     _difference_cell(v["original"]),
                     _difference_cell(v["replicate"]), f"{held}: {v['why']}"])
    return ["protocol", "fraction", "pretext", "original: difference [95% CI]", "replicate: difference [95% CI]",
            "original's verdict"], rows
