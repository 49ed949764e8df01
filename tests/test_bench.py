"""pretextlab.bench: the quick benchmark runs end to end and reports every field, sane and JSON-clean."""

from __future__ import annotations

import json
import math

from pretextlab.bench import run_bench

BACKBONE_FIELDS = {
    "model_img_s", "pipeline_img_s", "naive_img_s", "overhead", "speedup_vs_naive", "mfu", "mfu_pipeline",
    "gflops_per_image_fwd", "eval_img_s", "naive_eval_img_s", "pretext_model_pairs_s",
    "pretext_pipeline_pairs_s", "pretext_overhead",
}
# 1 - pipeline/model: negative when the pipeline is the faster one, so no lower bound.
SIGNED = {"overhead", "pretext_overhead"}


def test_quick_bench_reports_every_field(capsys, tmp_path):
    out = tmp_path / "bench.json"
    result = run_bench(quick=True, json_out=True, out=out)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "overhead" in "\n".join(lines[:-1])  # the human-readable table comes first
    reported = json.loads(lines[-1])  # the last stdout line is exactly one JSON object
    assert reported == json.loads(json.dumps(result))
    assert json.loads(out.read_text()) == reported

    assert {"machine", "precision", "threads", "peak_gflops", "backbones", "overhead", "speedup_vs_naive",
            "mfu"} <= set(reported)
    assert reported["precision"] in ("fp32", "bf16")
    assert reported["threads"] >= 1 and reported["machine"]["cpu_capability"]
    peaks = reported["peak_gflops"]
    assert set(peaks) == {"fp32", "bf16"}
    assert math.isfinite(peaks["fp32"]) and peaks["fp32"] > 0
    if peaks["bf16"] is None:  # no native bf16: the reason must be given
        assert any("bf16" in n for n in reported["notes"])
    else:
        assert math.isfinite(peaks["bf16"]) and peaks["bf16"] > 0

    assert list(reported["backbones"]) == ["fast", "resnet18"]
    for name, b in reported["backbones"].items():
        assert BACKBONE_FIELDS <= set(b), (name, BACKBONE_FIELDS - set(b))
        for k in BACKBONE_FIELDS:
            assert isinstance(b[k], float) and math.isfinite(b[k]), (name, k, b[k])
            if k in SIGNED:
                assert b[k] < 1, (name, k, b[k])  # 1 - pipeline/model: below 1 while the pipeline runs at all
            else:
                assert b[k] > 0, (name, k, b[k])
        assert b["overhead"] == 1 - b["pipeline_img_s"] / b["model_img_s"]
        assert b["speedup_vs_naive"] == b["pipeline_img_s"] / b["naive_img_s"]
        assert math.isclose(b["mfu_pipeline"] / b["mfu"], b["pipeline_img_s"] / b["model_img_s"])
    assert reported["backbones"]["resnet18"]["gflops_per_image_fwd"] > reported["backbones"]["fast"]["gflops_per_image_fwd"]
    for k in ("overhead", "speedup_vs_naive", "mfu"):  # the headline numbers are the default backbone's
        assert reported[k] == reported["backbones"]["fast"][k]
