"""The bench's result as text: the lines `pretextlab bench` prints."""

from __future__ import annotations

from typing import Any

TARGET_OVERHEAD = 0.03  # a training path should cost at most this much more than its model step alone

# ----------------------------------------------------------------------------------------------
# Report


def format_report(r: dict[str, Any]) -> str:
    """A human-readable table: throughputs per backbone, then the ratios that answer the question."""
    peaks = r["peak_gflops"]
    bf16 = f"{peaks['bf16']:.0f}" if peaks["bf16"] else "n/a"
    d = r["data"]
    where = r["machine"]["cuda"] if r["device"].startswith("cuda") else r["machine"]["cpu"]
    lines = [
        f"pretextlab bench{' (quick)' if r['quick'] else ''}: {where} on {r['device']} "
        f"({r['machine']['cpu_capability']}), {r['threads']} threads, {r['precision']}, batch {r['batch_size']}",
        f"data: {d['source']} ({d['images']} images, {d['classes']} classes, {d['image_size']} px)",
        f"peak matmul GFLOP/s: fp32 {peaks['fp32']:.0f}, bf16 {bf16}",
        "batch preparation per batch: " + ", ".join(f"{k} {v:.1f} ms" for k, v in r["batch_prep_ms"].items()),
        "",
        f"{'throughput':<12}{'GFLOP/img':>10}{'model':>10}{'pipeline':>10}{'naive':>10}"
        f"{'eval':>10}{'naive eval':>12}",
        f"{'':<12}{'(fwd)':>10}{'img/s':>10}{'img/s':>10}{'img/s':>10}{'img/s':>10}{'img/s':>12}",
    ]
    for name, b in r["backbones"].items():
        lines.append(f"{name:<12}{b['gflops_per_image_fwd']:>10.3f}{b['model_img_s']:>10.0f}"
                     f"{b['pipeline_img_s']:>10.0f}"
                     f"{b['naive_img_s']:>10.0f}{b['eval_img_s']:>10.0f}{b['naive_eval_img_s']:>12.0f}")
    lines += ["", f"{'ratios':<12}{'overhead':>10}{'vs naive':>10}{'MFU':>8}{'MFU pipe':>10}{'eval vs naive':>15}"]
    for name, b in r["backbones"].items():
        lines.append(f"{name:<12}{b['overhead']:>+10.1%}{b['speedup_vs_naive']:>9.1f}x{b['mfu']:>8.1%}"
                     f"{b['mfu_pipeline']:>10.1%}{b['eval_img_s'] / b['naive_eval_img_s']:>14.1f}x")
    lines += ["", f"{'pretext / segmentation':<28}{'model img/s':>12}{'pipeline img/s':>16}{'overhead':>10}"]
    for name, b in r["backbones"].items():
        for task, t in {**b["tasks"], **({"segmentation": b["segmentation"]} if "segmentation" in b else {})}.items():
            lines.append(f"{name + ' ' + task:<28}{t['model_img_s']:>12.0f}{t['pipeline_img_s']:>16.0f}"
                         f"{t['overhead']:>+10.1%}")
    if "peer" in r:
        lines += ["", *peer_lines(r)]
    first = next(iter(r["backbones"]))
    lines += ["", f"==> {first}: pipeline overhead {r['overhead']:+.1%} vs the model alone, "
                  f"{r['speedup_vs_naive']:.1f}x the naive DataLoader loop, MFU {r['mfu']:.1%}; other paths' overheads "
              + ", ".join(f"{k} {v:+.1%}" for k, v in r["task_overheads"].items() if k != "classification")]
    over = [f"{k} {v:+.1%}" for k, v in r["task_overheads"].items() if v > TARGET_OVERHEAD]
    lines.append(f"==> every path of {first} within {TARGET_OVERHEAD:.0%} of its model step" if not over else
                 f"==> paths of {first} more than {TARGET_OVERHEAD:.0%} under their model step: {', '.join(over)}")
    if "peer" in r:
        p = r["peer"]
        lines.append(f"==> {p['backbone']} SimCLR: pretextlab {r['speedup_vs_lightly']:.2f}x lightly's pipeline "
                     f"(its model alone {r['ceiling_vs_lightly']:.2f}x)")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def peer_lines(r: dict[str, Any]) -> list[str]:
    """The race against lightly: rates per backbone, augmentation costs, and the k-NN scores after training."""
    p = r["peer"]
    lines = [f"{'simclr vs ' + p['name'] + ' ' + p['version']:<28}{'model':>8}{'pretextlab':>12}{'lightly':>9}"
             f"{'workers':>9}{'vs lightly':>12}{'ceiling':>9}",
             f"{'':<28}{'img/s':>8}{'img/s':>12}{'img/s':>9}"]
    for name, b in r["backbones"].items():
        t, q = b["tasks"]["simclr"], b["peer"]
        lines.append(f"{name:<28}{t['model_img_s']:>8.0f}{t['pipeline_img_s']:>12.0f}{q['img_s']:>9.0f}"
                     f"{q['workers']:>9}{q['speedup_vs_lightly']:>11.2f}x{q['ceiling_vs_lightly']:>8.2f}x")
    a = p["augment_ms_per_image"]
    lines.append(f"two views per image, ms on one thread: pretextlab {a['pretextlab']:.3f} ({p['augment_device']}), "
                 f"lightly {a['lightly']:.3f} (+ JPEG decoding {p['decode_ms_per_image']['lightly']:.3f})")
    if p["epochs"]:
        speed = p["train_img_s"]
        lines.append(f"after {p['epochs']} epoch(s) on {p['knn_images']['bank']} images: k-NN accuracy on "
                     f"{p['knn_images']['val']} held out, pretextlab {p['knn_pretextlab']:.4f}, lightly "
                     f"{p['knn_lightly']:.4f}, untrained {p['knn_untrained']:.4f}; pretextlab - lightly "
                     f"{_signed_ci(p['knn_difference'])}; training img/s pretextlab "
                     f"{speed['pretextlab']:.0f}, lightly {speed['lightly']:.0f}")
    return lines


def _signed_ci(d: dict[str, Any]) -> str:
    """'+0.0123 [-0.0040, +0.0286]' (paired over the same images), or the value alone without an interval."""
    ci = d["ci95"]
    return f"{d['value']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
