"""What pretraining did to a backbone, seen directly: its first-layer filters and its early feature maps,
pretrained beside randomly initialised. The only part of the report that builds and runs a network.

It builds built-in, timm and torchvision backbones only: a backbone that is a Python file the study names
(`path/to/file.py:Net`) would run that file's code, and a report runs no code a study folder names, so
`load_pretext_backbone` refuses it (UserBackbone) and the report says so in one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib import colormaps
from torch import Tensor, nn

from ..io import load_torch
from ..layout import BACKBONE, CHECKPOINT
from ..models import evaluating, load_backbone_weights, make_backbone, read_weights
from ..models.external import is_user_file
from .canvas import WIDTH, new_figure, save_png
from .images import to_display
from .render import md
from .results import PretextRun


def filter_mosaic(weight: Tensor) -> np.ndarray:
    """Conv filters (O, C, k, k) tiled on a white grid, each min-max scaled on its own; RGB if C == 3."""
    w = weight.detach().float()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    lo, hi = w.amin((1, 2, 3), keepdim=True), w.amax((1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    o, kh, kw = w.shape[:3]
    cols = math.ceil(math.sqrt(o))
    rows = math.ceil(o / cols)
    mosaic = np.ones((rows * (kh + 1) + 1, cols * (kw + 1) + 1, 3))
    for i in range(o):
        r, c = divmod(i, cols)
        mosaic[1 + r * (kh + 1):1 + r * (kh + 1) + kh, 1 + c * (kw + 1):1 + c * (kw + 1) + kw] = w[i]
    return mosaic


def first_conv(net: nn.Module) -> nn.Conv2d:
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer")
    return conv


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)


def early_features(net: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Feature maps of the first conv stage and of the first block, captured with forward hooks.

    First conv stage: the first activation module after the first Conv2d (conv -> norm -> act).
    First block: the first module holding two or more (but not all) convolutions to finish its
    forward pass, e.g. FastNet's first ResBlock or ResNet's first BasicBlock. Works for any backbone
    built from standard modules, without naming its layers.
    """
    mods = list(net.named_modules())
    n_convs = {name: sum(isinstance(m, nn.Conv2d) for m in mod.modules()) for name, mod in mods}
    i_conv = next(i for i, (_, m) in enumerate(mods) if isinstance(m, nn.Conv2d))
    stage = next(((n, m) for n, m in mods[i_conv + 1:] if isinstance(m, ACTIVATIONS)), mods[i_conv])
    blocks = [(n, m) for n, m in mods if 2 <= n_convs[n] < n_convs[""]]
    captured: dict[str, Tensor] = {}

    def hook(label: str) -> Callable:
        def keep(_module: nn.Module, _inputs: Any, out: Any) -> None:
            if isinstance(out, Tensor) and out.ndim == 4 and not any(k.startswith(label) for k in captured):
                captured[f"{label} {out.shape[1]}x{out.shape[2]}x{out.shape[3]}"] = out.detach().clone()
        return keep

    handles = [stage[1].register_forward_hook(hook(f"first conv stage ({stage[0]})"))]
    handles += [m.register_forward_hook(hook(f"first block ({n})")) for n, m in blocks]
    try:
        with evaluating(net):
            net(x)
    finally:
        for h in handles:
            h.remove()
    first_block = next((k for k in captured if k.startswith("first block")), None)
    return {k: v for k, v in captured.items() if k.startswith("first conv stage") or k == first_block}


class UserBackbone(Exception):
    """The backbone is a Python file the study names: building it would run that file."""


def refuse_user_file(spec: str) -> None:
    """UserBackbone, with the report's one-line note, where the spec names a Python file."""
    if is_user_file(spec):
        raise UserBackbone(f"The backbone {md(spec, code=True)} is the study's own Python file; the report runs no "
                           "code a study folder names, so it shows no filters or feature maps for it.")


def load_pretext_backbone(run: PretextRun) -> tuple[nn.Module, dict[str, Any], str]:
    """A pretext run's pretrained backbone, the checkpoint's meta, and which file the weights came from;
    UserBackbone (before anything is built) where the backbone is a user's Python file.

    backbone.safetensors is preferred: it is what fine-tuning starts from (BatchNorm statistics
    recalibrated on whole images); otherwise the "backbone."-prefixed weights of checkpoint.pt (the
    others are the pretext task's head).
    """
    checkpoint = load_torch(run.path / CHECKPOINT)  # tensors and plain values only: it runs no code
    meta = checkpoint["meta"]
    refuse_user_file(str(meta["backbone"]))
    if (run.path / BACKBONE).exists():
        source, state = BACKBONE, read_weights(run.path / BACKBONE)
    else:
        source, state = CHECKPOINT, {k: v for k, v in checkpoint["model"].items() if k.startswith("backbone.")}
    net = make_backbone(meta["backbone"], meta["channels"])
    load_backbone_weights(net, state, f"{run.folder}/{source}")
    return net.eval(), meta, source


def filters_figure(nets: dict[str, nn.Module], path: Path) -> None:
    """Each network's first-convolution filters as a mosaic, side by side."""
    fig = new_figure(3.6 * len(nets), 3.9)
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    for ax, (label, net) in zip(axes, nets.items()):
        w = first_conv(net).weight
        ax.imshow(filter_mosaic(w), interpolation="nearest")
        ax.set_title(f"{label}\n{w.shape[0]} filters {w.shape[1]}x{w.shape[2]}x{w.shape[3]}", fontsize=9)
        ax.axis("off")
    save_png(fig, path, tight=True)


def maps_mosaic(maps: Tensor, n: int = 16, height: int = 64) -> np.ndarray:
    """The first n channels of (C, H, W) side by side as viridis RGB, each min-max scaled on its own,
    enlarged (nearest) to about `height` px so stages of different resolution line up."""
    t = maps[:n].float()
    lo, hi = t.amin((1, 2), keepdim=True), t.amax((1, 2), keepdim=True)
    t = ((t - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    k = max(1, round(height / t.shape[1]))
    t = t.repeat(k, 1).repeat(k, 2)
    gap = np.full((t.shape[1], 3), np.nan)
    gray = np.concatenate([np.concatenate([m, gap], 1) for m in t], 1)[:, :-gap.shape[1]]
    rgb = colormaps["viridis"](np.nan_to_num(gray))[..., :3]
    rgb[np.isnan(gray)] = 1.0  # white gaps between channels
    return rgb


def feature_maps_figure(image: Tensor, maps: dict[str, dict[str, Tensor]], path: Path, n: int = 16) -> None:
    """The input image, then the first n channels of each captured stage, one row per (network, stage)."""
    rows = [(net, stage, t[0]) for net, stages in maps.items() for stage, t in stages.items()]
    n = min(n, *(t.shape[0] for *_, t in rows))
    fig = new_figure(WIDTH, 0.8 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=[1, n])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    axes[0, 0].imshow(to_display(image, 64), interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=9)
    axes[0, 1].set_title(f"channels 0-{n - 1}, left to right", fontsize=9)
    for i, (net, stage, t) in enumerate(rows):
        axes[i, 1].imshow(maps_mosaic(t, n), interpolation="nearest")
        axes[i, 1].set_ylabel(f"{net}\n" + stage.replace(" (", "\n("), fontsize=8, rotation=0, ha="right",
                              va="center")
    save_png(fig, path)
