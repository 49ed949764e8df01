"""The study: every stage runs once, an interrupted study resumes where it stopped, the report follows."""

import json
import shutil

import pytest
import torch

import pretextlab.study as study_mod
from pretextlab.data import DataConfig
from pretextlab.errors import UserError
from pretextlab.io import sha256_file
from pretextlab.layout import run_name
from pretextlab.report import write_report
from pretextlab.study import PRESETS, run_study


def _data(folder, cache_dir) -> DataConfig:
    return DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir))


def test_epoch_budget_gives_small_fractions_more_epochs_but_fewer_steps():
    p = PRESETS["fast"]
    e = {f: p.epochs_for(f) for f in (1.0, 0.5, 0.1, 0.01)}
    assert e[1.0] == p.finetune.epochs
    assert e[1.0] < e[0.5] < e[0.1] <= e[0.01]
    assert e[0.1] * 0.1 < e[1.0]  # fewer optimizer steps than the full set
    assert e[0.01] == int(p.finetune.epochs * p.max_epoch_factor)  # capped


def test_study_resumes_after_an_interruption_between_stages(make_image_folder, cache_dir, tmp_path, monkeypatch):
    folder = make_image_folder(n_per_class=16, size=16)
    out = tmp_path / "study"
    import pretextlab.study.stages as stages_mod
    from pretextlab.finetune import Finetuning

    real = stages_mod.execute
    calls = []

    def interrupt_second(job, *args, **kw):
        if isinstance(job, Finetuning):
            calls.append(job.init)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real(job, *args, **kw)

    monkeypatch.setattr(stages_mod, "execute", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_study(_data(folder, cache_dir), out, fractions=(1.0, 0.5), preset="smoke", device="cpu", quiet=True)
    pretrain_summary = out / "pretrain-context-s0" / "summary.json"
    first_run = out / run_name(0.5, "scratch", 0) / "summary.json"  # smallest fraction first
    assert pretrain_summary.exists() and first_run.exists()
    assert not (out / run_name(0.5, "context", 0) / "summary.json").exists()
    stamps = pretrain_summary.stat().st_mtime_ns, first_run.stat().st_mtime_ns

    monkeypatch.setattr(stages_mod, "execute", real)
    report = write_report(run_study(_data(folder, cache_dir), out, fractions=(1.0, 0.5), preset="smoke", device="cpu",
                                    quiet=True))
    assert (pretrain_summary.stat().st_mtime_ns, first_run.stat().st_mtime_ns) == stamps  # not redone
    for f in (1.0, 0.5):
        for arm in ("scratch", "context"):
            s = json.loads((out / run_name(f, arm, 0) / "summary.json").read_text())
            assert s["fraction"] == f
            assert (s["init"] is None) == (arm == "scratch")
    pretrained = json.loads((out / run_name(0.5, "context", 0) / "summary.json").read_text())
    assert pretrained["init"].endswith("pretrain-context-s0/backbone.safetensors")
    # same labelled subset for both arms
    idx = [json.loads((out / run_name(0.5, a, 0) / "indices.json").read_text()) for a in ("scratch", "context")]
    assert idx[0] == idx[1]
    text = report.read_text()
    assert run_name(0.5, "context", 0) in text or "0.5" in text
    assert (out / "report.html").exists() and (out / "summary.json").exists()
    study = json.loads((out / "study.json").read_text())
    assert set(study["stage_times_s"]) >= {"pretrain-context-s0", run_name(1.0, "context", 0)}
    # a finished study run again keeps the largest peak memory of its processes
    (out / "study.json").write_text(json.dumps({**study, "peak_rss_mib": 123456.0}))
    run_study(_data(folder, cache_dir), out, fractions=(1.0, 0.5), preset="smoke", device="cpu", quiet=True)
    assert json.loads((out / "study.json").read_text())["peak_rss_mib"] == 123456.0


def test_study_rejects_bad_input_before_training(make_image_folder, cache_dir, tmp_path):
    folder = make_image_folder(n_per_class=4, size=16)
    with pytest.raises(UserError, match="no labelled example"):
        run_study(_data(folder, cache_dir), tmp_path / "s", fractions=(1.0, 0.01), preset="smoke", device="cpu")
    with pytest.raises(UserError, match="unknown preset"):
        run_study(_data(folder, cache_dir), tmp_path / "s", preset="huge", device="cpu")
    with pytest.raises(UserError, match="unknown pretext"):
        run_study(_data(folder, cache_dir), tmp_path / "s", pretexts=("jigsaw",), preset="smoke", device="cpu")
    assert not (tmp_path / "s" / "pretrain-context-s0").exists()


def test_two_seeds_probes_and_the_comparison_report(make_image_folder, cache_dir, tmp_path, monkeypatch):
    """Every run repeated per seed, the probes resumed entry by entry, a report with intervals."""
    folder = make_image_folder(n_per_class=16, size=16)
    out = tmp_path / "study"
    import pretextlab.study.probes as probes_mod

    real = probes_mod.evaluate_frozen
    calls = []

    def interrupt_third(*args, **kw):  # inside the first probe stage: two entries saved, two to go
        calls.append(1)
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt
        return real(*args, **kw)

    interrupt = True
    monkeypatch.setattr(probes_mod, "evaluate_frozen", interrupt_third)
    kw = dict(fractions=(1.0, 0.5), seeds=(0, 1), preset="smoke", device="cpu", quiet=True, shared_pretraining=True)
    with pytest.raises(KeyboardInterrupt):
        run_study(_data(folder, cache_dir), out, **kw)
    probes_file = out / "pretrain-context" / "probes.json"
    saved = json.loads(probes_file.read_text())["results"]
    assert sorted(saved) == ["f0.5-s0", "f1-s0"]  # small fractions first, seed by seed

    interrupt = False
    report = write_report(run_study(_data(folder, cache_dir), out, **kw))
    assert len(calls) == 3 + 2 + 2 + 2  # resumed: the two missing context entries, then 2 random seeds x 2
    probes = json.loads(probes_file.read_text())["results"]
    assert {k: probes[k] for k in saved} == saved  # finished entries kept, not recomputed
    random = json.loads((out / "random-init" / "probes.json").read_text())["results"]
    assert sorted(probes) == sorted(random) == ["f0.5-s0", "f0.5-s1", "f1-s0", "f1-s1"]

    # every run repeated per seed: a new label subset per seed, the same one for both arms of a seed
    idx = {(a, s): json.loads((out / run_name(0.5, a, s) / "indices.json").read_text())["train"]
           for a in ("scratch", "context") for s in (0, 1)}
    assert idx["scratch", 0] == idx["context", 0] and idx["scratch", 1] == idx["context", 1]
    assert idx["scratch", 0] != idx["scratch", 1]
    for s in (0, 1):
        run = json.loads((out / run_name(0.5, "scratch", s) / "summary.json").read_text())
        assert run["seed"] == s and probes[f"f0.5-s{s}"]["n_train"] == run["n_train"]  # the probes' subset too

    summary = json.loads((out / "summary.json").read_text())
    ev = summary["evaluation"]
    assert list(ev["cells"]) == ["finetune", "linear", "knn"]
    for protocol in ("finetune", "linear", "knn"):
        for f in ("1", "0.5"):
            cell = ev["cells"][protocol][f]["context"]["f1_macro"]
            assert cell["n"] == 2 and len(cell["ci95"]) == 2 and set(cell["by_seed"]) == {"0", "1"}
            assert ev["vs_baseline"][protocol][f]["context"]["f1_macro"]["seeds"] == [0, 1]
    assert ev["cells"]["linear"]["1"]["scratch"]["f1_macro"]["by_seed"]["1"] == random["f1-s1"]["linear"]["f1_macro"]
    assert summary["status"]["missing"] == [] and summary["status"]["missing_probes"] == []
    md = report.read_text()
    assert "| protocol | fraction | scratch / random init | context | context − baseline |" in md
    assert md.count("| linear probe |") == 4 and md.count("| k-NN |") == 4  # 2 fractions x (F1, accuracy)
    assert " [" in md.split("| linear probe | 0.5 |")[1].split("\n")[0]  # an interval in the cell
    stages = json.loads((out / "study.json").read_text())["stage_times_s"]
    assert {"probe-context", "probe-random-s0", "probe-random-s1", run_name(0.5, "context", 1)} <= set(stages)
    # fine-tuning order: small fractions first, every seed of a fraction before the next fraction
    assert [k for k in stages if k.startswith("f")] == [run_name(f, a, s) for f in (0.5, 1.0) for s in (0, 1)
                                                        for a in ("scratch", "context")]


@pytest.mark.parametrize("kw, message", [
    (dict(seeds=()), "no seed given"),
    (dict(seeds=(0, 0)), "listed twice"),
    (dict(seeds=(-1,)), "--seeds -1 is out of range"),
    (dict(pretexts=("context", "context")), "listed twice"),
])
def test_study_rejects_bad_lists(make_image_folder, cache_dir, tmp_path, kw, message):
    with pytest.raises(UserError, match=message):
        run_study(_data(make_image_folder(n_per_class=4, size=16), cache_dir), tmp_path / "s", preset="smoke",
                  device="cpu", **kw)
    assert not (tmp_path / "s").exists()


def test_cli_study_parses_lists_and_names_the_bad_entry(make_image_folder, tmp_path):
    """In process (main() turns a UserError into the one stderr line, tested in test_cli.py)."""
    from typer.testing import CliRunner

    from pretextlab.cli import app

    folder = make_image_folder(n_per_class=4, size=16)
    common = ["study", "--data", str(folder), "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "s")]
    for args, message in (
        (["--pretext", "context,jigsaw", "--seeds", "0,1"], "unknown pretext task 'jigsaw'; choose one of: context"),
        (["--seeds", "0,one"], "--seeds '0,one' is not a comma-separated list of integers, e.g. 0,1,2"),
        (["--seeds", "0, 1,1"], "a seed is listed twice in 0, 1, 1"),
        (["--pretrain-epochs", "2,eight"], "--pretrain-epochs '2,eight' is not a comma-separated list of integers"),
    ):
        result = CliRunner().invoke(app, common + args)
        assert isinstance(result.exception, UserError) and message in str(result.exception), result.output
        assert "\n" not in str(result.exception)
    assert not (tmp_path / "s").exists()


def test_run_probes_reuses_finished_entries_and_refuses_other_settings(tiny_dataset, tmp_path):
    from pretextlab.models import random_backbone
    from pretextlab.study import run_probes

    data = DataConfig(source="tiny", val_fraction=0.25)
    origin = {"backbone": "fast", "init": "random"}
    net = random_backbone("fast", 3, seed=0)
    first = run_probes(net, origin, tmp_path, [(0.5, 0)], data, tiny_dataset, torch.device("cpu"))
    entry = first["results"]["f0.5-s0"]
    assert entry["n_train"] == 24 and set(entry) >= {"linear", "knn"}  # round(15 / 2) = 8 of each class
    both = run_probes(net, origin, tmp_path, [(0.5, 0), (1.0, 0)], data, tiny_dataset, torch.device("cpu"))
    assert both["results"]["f0.5-s0"] == entry and both["results"]["f1-s0"]["n_train"] == 45
    with pytest.raises(UserError, match="holds probes with other settings"):
        run_probes(net, {**origin, "init": "other"}, tmp_path, [(0.5, 0)], data, tiny_dataset, torch.device("cpu"))
    # a study folder moved elsewhere: its probes name its backbone under the old --out and are kept
    old_study, new_study = tmp_path / "old", tmp_path / "new"
    made = {"backbone": "fast", "init": str(old_study / "pretrain-context" / "backbone.safetensors")}
    kept = run_probes(net, made, old_study / "pretrain-context", [(0.5, 0)], data, tiny_dataset, torch.device("cpu"))
    old_study.rename(new_study)
    here = {**made, "init": str(new_study / "pretrain-context" / "backbone.safetensors")}
    again = run_probes(net, here, new_study / "pretrain-context", [(0.5, 0)], data, tiny_dataset, torch.device("cpu"))
    assert again["results"] == kept["results"]
    with pytest.raises(UserError, match=r"holds probes with other settings \(init\)"):  # another study's backbone
        run_probes(net, {**made, "init": str(tmp_path / "third" / "pretrain-context" / "backbone.safetensors")},
                   new_study / "pretrain-context", [(0.5, 0)], data, tiny_dataset, torch.device("cpu"))


def test_export_keeps_results_not_weights_and_a_copy_resumes(make_image_folder, cache_dir, tmp_path):
    """`export` copies what a study needs to resume but no weights; resuming the copy re-makes the
    backbone (bit-identical here: same machine, seed and threads) and keeps every finished run."""
    folder = make_image_folder(n_per_class=12, size=16)
    out = tmp_path / "study"
    write_report(run_study(_data(folder, cache_dir), out, fractions=(1.0,), preset="smoke", device="cpu", quiet=True))
    with pytest.raises(UserError, match="inside the study folder"):
        study_mod.export_study(out, out / "copy")
    kept = tmp_path / "kept"
    files, size = study_mod.export_study(out, kept)
    names = [p.relative_to(kept) for p in kept.rglob("*") if p.is_file()]
    assert files == len(names) and size == sum((kept / n).stat().st_size for n in names)
    assert not [n for n in names if n.suffix == ".safetensors" or "tb" in n.parts]
    assert {n.name for n in names if n.suffix == ".pt"} == {"examples.pt", "samples.pt"}  # figure inputs only
    assert (kept / "report.md").exists() and (kept / "study.json").exists()
    for figure in ("examples_f1.png", "pretext_samples_context.png"):  # a re-rendered copy keeps its figures
        (kept / "figures" / figure).unlink()
    write_report(kept)
    assert (kept / "figures" / "examples_f1.png").exists()
    assert (kept / "figures" / "pretext_samples_context.png").exists()
    original = (out / "pretrain-context-s0" / "backbone.safetensors").read_bytes()
    kept_summary = json.loads((kept / "pretrain-context-s0" / "summary.json").read_text())
    weights = out / "pretrain-context-s0" / "backbone.safetensors"
    assert kept_summary["backbone_sha256"] == sha256_file(weights)

    shutil.rmtree(out)  # a new machine: only the kept files, in another folder than the study's --out
    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(kept, moved)
    run_file = moved / run_name(1.0, "context", 0) / "summary.json"
    stamp = run_file.stat().st_mtime_ns
    probes = (moved / "pretrain-context-s0" / "probes.json").read_text()
    write_report(run_study(_data(folder, cache_dir), moved, fractions=(1.0,), preset="smoke", device="cpu", quiet=True))
    assert run_file.stat().st_mtime_ns == stamp  # the finished run was kept, not redone
    assert (moved / "pretrain-context-s0" / "probes.json").read_text() == probes  # and its probes
    assert (moved / "pretrain-context-s0" / "backbone.safetensors").read_bytes() == original
    remade = json.loads((moved / "pretrain-context-s0" / "summary.json").read_text())
    assert remade["earlier_backbone_sha256"] == remade["backbone_sha256"] == kept_summary["backbone_sha256"]
    report = (moved / "report.md").read_text()
    assert "pretrained again" in report and "bit-identical to the earlier one" in report


def test_each_seed_pretrains_its_own_backbone_unless_shared(make_image_folder, cache_dir, tmp_path):
    """A seed is a whole replicate: its own pretraining (another SHA-256) that its runs and probes start
    from; --shared-pretraining gives every seed the first seed's backbone."""
    folder = make_image_folder(n_per_class=12, size=16)
    test = make_image_folder("held-out", n_per_class=4, size=16, seed=5)
    kw = dict(fractions=(1.0,), seeds=(0, 1), preset="smoke", device="cpu", quiet=True)
    data = DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir), test_source=str(test))
    out = run_study(data, tmp_path / "per-seed", **kw)
    sha = {s: json.loads((out / f"pretrain-context-s{s}" / "summary.json").read_text())["backbone_sha256"]
           for s in (0, 1)}
    assert sha[0] != sha[1] and json.loads((out / "study.json").read_text())["pretraining"] == "per-seed"
    for s in (0, 1):
        run = json.loads((out / run_name(1.0, "context", s) / "summary.json").read_text())
        assert run["init"] == str(out / f"pretrain-context-s{s}" / "backbone.safetensors")
        assert run["init_sha256"] == sha[s]
        probes = json.loads((out / f"pretrain-context-s{s}" / "probes.json").read_text())["results"]
        assert list(probes) == [f"f1-s{s}"]  # each pretraining probed for its own seed
        # the test split: every run and probe scored on it too
        assert run["test"]["n"] == 12 and set(probes[f"f1-s{s}"]["test"]) == {"linear", "knn"}
    random = json.loads((out / "random-init" / "probes.json").read_text())["results"]
    assert all("test" in entry for entry in random.values())

    shared = run_study(data, tmp_path / "shared", shared_pretraining=True, **kw)
    inits = {json.loads((shared / run_name(1.0, "context", s) / "summary.json").read_text())["init_sha256"]
             for s in (0, 1)}
    assert inits == {sha[0]}  # the first seed's pretraining, bit-identical to the per-seed study's seed 0
    assert not (shared / "pretrain-context-s0").exists() and (shared / "pretrain-context").is_dir()
    with pytest.raises(UserError, match=r"other settings \(pretraining\).*--shared-pretraining"):
        run_study(data, shared, **kw)  # resumed without the option it was made with


def test_a_replicate_reruns_a_finished_study_under_other_seeds(make_image_folder, cache_dir, tmp_path):
    folder = make_image_folder(n_per_class=12, size=16)
    original = write_report(run_study(_data(folder, cache_dir), tmp_path / "orig", fractions=(1.0,), seeds=(0,),
                                      preset="smoke", device="cpu", quiet=True)).parent
    kw = study_mod.replicate_settings(original)
    assert kw["fractions"] == (1.0,) and kw["preset"] == "smoke" and not kw["shared_pretraining"]
    rep = run_study(out_dir=tmp_path / "rep", seeds=(1,), device="cpu", quiet=True, **kw)
    study = json.loads((rep / "study.json").read_text())
    assert study["replicate_of"] == {"study": str(original.resolve()), "seeds": [0], "precision": study["precision"],
                                     "pretraining": "per-seed"}
    assert (rep / "original-summary.json").read_bytes() == (original / "summary.json").read_bytes()
    assert (rep / run_name(1.0, "context", 1) / "summary.json").exists()
    with pytest.raises(UserError, match="no study.json"):
        study_mod.replicate_settings(tmp_path / "nowhere")


def test_test_data_of_other_classes_is_refused(make_image_folder, cache_dir, tmp_path):
    folder = make_image_folder(n_per_class=6, size=16)
    other = make_image_folder("other", classes=("apple", "kiwi", "zebra"), n_per_class=2, size=16)
    data = DataConfig(source=str(folder), val_fraction=0.25, cache_dir=str(cache_dir), test_source=str(other))
    with pytest.raises(UserError, match="--test-data .* same classes"):
        run_study(data, tmp_path / "s", fractions=(1.0,), preset="smoke", device="cpu", quiet=True)
    assert not (tmp_path / "s").exists()


def test_probes_extract_features_in_the_study_precision_and_hold_it(make_image_folder, cache_dir, tmp_path,
                                                                     monkeypatch):
    """A new probe folder records the precision its features were extracted in; a folder from before the
    record (fp32 then) keeps fp32 when a bf16 study resumes it, so one folder never mixes two."""
    from pretextlab.data import open_data
    from pretextlab.models import random_backbone

    data = _data(make_image_folder(n_per_class=8, size=16), cache_dir)
    _, ds = open_data(data, "cpu", None)
    used = []
    import pretextlab.study.probes as probes_mod

    real = probes_mod.frozen_features
    monkeypatch.setattr(probes_mod, "frozen_features", lambda *a: used.append(a[-1]) or real(*a))

    def run(folder, keys):
        return study_mod.run_probes(random_backbone("fast", ds.channels, 0), {"init": "random"}, folder, keys, data,
                                    ds, torch.device("cpu"), "bf16")

    new = tmp_path / "new"
    new.mkdir()
    run(new, [(1.0, 0)])
    assert used == ["bf16"]
    assert json.loads((new / "probes.json").read_text())["settings"]["features_precision"] == "bf16"

    old = tmp_path / "old"
    old.mkdir()
    store = json.loads((new / "probes.json").read_text())
    del store["settings"]["features_precision"], store["schema"]  # as written before either was recorded
    store["results"] = {}
    (old / "probes.json").write_text(json.dumps(store))
    run(old, [(1.0, 0)])
    assert used == ["bf16", "fp32"]
    assert json.loads((old / "probes.json").read_text())["settings"]["features_precision"] == "fp32"


def test_pretraining_length_as_an_axis(make_image_folder, cache_dir, tmp_path):
    """--pretrain-epochs 1,2: each length its own pretraining (a shorter one is not a prefix of a longer
    one-cycle run) and arm; the answers page draws the gain against the length and calls it by its rule."""
    folder = make_image_folder(n_per_class=8, size=16)
    out = run_study(_data(folder, cache_dir), tmp_path / "s", fractions=(1.0,), preset="smoke", device="cpu",
                    quiet=True, pretrain_epochs=(2, 1))
    study = json.loads((out / "study.json").read_text())
    assert study["arms"] == ["context-e1", "context-e2"] and study["pretrain_lengths"] == [1, 2]
    assert study["pretrain_epochs"] == {"context-e1": 1, "context-e2": 2} and study["pretexts"] == ["context"]
    for n in (1, 2):
        pre = out / f"pretrain-context-e{n}-s0"
        assert json.loads((pre / "config.json").read_text())["train"]["epochs"] == n
        assert json.loads((out / run_name(1.0, f"context-e{n}", 0) / "summary.json").read_text())["init"] == \
            str(pre / "backbone.safetensors")
    write_report(out)
    lengths = json.loads((out / "summary.json").read_text())["lengths"]["context"]
    assert [p["epochs"] for p in lengths["fractions"]["1"]["points"]] == [1, 2]
    assert lengths["fractions"]["1"]["verdict"] in ("no gain", "saturated", "still rising")
    answers = (out / "answers.md").read_text()
    assert "## How much pretraining pays" in answers and (out / "figures" / "lengths.png").is_file()
    with pytest.raises(UserError, match="--pretrain-epochs must be whole numbers >= 1"):
        run_study(_data(folder, cache_dir), tmp_path / "t", preset="smoke", device="cpu", pretrain_epochs=(0, 2))
