"""Backbones from any source, behind the interface the rest of pretextlab needs.

A backbone spec is a built-in name (`fast`, `resnet18`, ..., see models.BACKBONES), `timm:<name>`
(any timm architecture, created without downloaded weights), `torchvision:<name>` (any torchvision
classification model) or `path/to/file.py:<name>` (a class or function of the user's file that takes
the number of input channels and returns an nn.Module whose output is a feature vector (B, D) or a
feature map (B, D, h, w); the head is pretextlab's). Append `@cifar` to adapt a strided stem to
32 px images the way the built-in ResNets are (first convolution 3x3 with stride 1, first max-pool
removed); for a ViT, give `--image-size` instead.

Whatever the source, the module returned meets one interface: `forward` gives pooled features
(B, out_dim) for any input size, `out_dim`, `stages` (module-name prefixes, input to output, for
`--transfer-stages`) and `feature_map(x)` (B, D, h, w) where the network has one (reconstruction
needs it). A user's file runs only when the user names it (`--backbone`): a checkpoint records its
path and SHA-256, never its code, and evaluate/predict ask for the file again instead of running
whatever a checkpoint names.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError

CIFAR = "@cifar"
PROBE_SIZE = 32  # the input side used to measure a backbone's output size


def parse_spec(spec: str) -> tuple[str, str, bool]:
    """(source, name, cifar_stem): source is builtin, timm, torchvision or file."""
    cifar = spec.endswith(CIFAR)
    body = spec[: -len(CIFAR)] if cifar else spec
    for source in ("timm", "torchvision"):
        if body.startswith(f"{source}:"):
            return source, body[len(source) + 1:], cifar
    if ".py:" in body:
        return "file", body, cifar
    return "builtin", body, cifar


def is_user_file(spec: str) -> bool:
    return parse_spec(spec)[0] == "file"


def file_sha256(spec: str) -> str:
    """SHA-256 of a user's backbone file: recorded with the run, so a changed file can be noticed."""
    path = Path(parse_spec(spec)[1].rsplit(":", 1)[0])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backbone_facts(spec: str) -> dict[str, str]:
    """What a checkpoint records of a user's backbone file besides its spec: the file's SHA-256."""
    return {"backbone_sha256": file_sha256(spec)} if is_user_file(spec) else {}


def check_external(spec: str) -> None:
    """Refuse a spec that names no model, before any work starts (one line saying what to fix)."""
    source, name, _ = parse_spec(spec)
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise UserError(f"--backbone {spec}: timm has no architecture '{name}'; list them with "
                            "python -c \"import timm; print(timm.list_models('*res*'))\"")
    elif source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models(torchvision.models):
            raise UserError(f"--backbone {spec}: torchvision has no classification model '{name}'; choose one of "
                            f"torchvision.models.list_models(), e.g. resnet34, mobilenet_v3_large")
    elif source == "file":
        _user_builder(name)


def make_external(spec: str, in_channels: int) -> nn.Module:
    """The backbone of a timm, torchvision or user-file spec, wrapped to pretextlab's interface."""
    source, name, cifar = parse_spec(spec)
    check_external(spec)
    if source == "timm":
        import timm

        try:  # ViTs: any input size (position embeddings interpolated, a ragged border padded), as pretext patches need
            net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels,
                                    dynamic_img_size=True, dynamic_img_pad=True)
        except TypeError:  # every other family has fixed-size-free forward passes already
            net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
        if cifar:
            _cifar_stem(net, spec)
        return Backbone(net, spec, stages=_timm_stages(net), tokens_ok=True)
    if source == "torchvision":
        import torchvision

        net = torchvision.models.get_model(name, weights=None)
        _drop_linear_head(net, spec)
        if in_channels != 3:
            _set_input_channels(net, in_channels, spec)
        if cifar:
            _cifar_stem(net, spec)
        return Backbone(net, spec, stages=_children_stages(net))
    net = _user_builder(name)(in_channels)
    if not isinstance(net, nn.Module):
        raise UserError(f"--backbone {spec} returned a {type(net).__name__}, not an nn.Module; make it return the "
                        "network (a class, or a function that builds one from the number of input channels)")
    if cifar:
        _cifar_stem(net, spec)
    return Backbone(net, spec, stages=_children_stages(net))


class Backbone(nn.Module):
    """Any network -> pooled features (B, out_dim), its stages and, where it has one, its feature map."""

    def __init__(self, net: nn.Module, spec: str, stages: list[tuple[str, ...]], tokens_ok: bool = False):
        super().__init__()
        self.net, self.spec = net, spec
        self.stages = [tuple(f"net.{p}" if p else "net" for p in stage) for stage in stages]
        with torch.no_grad():
            was = net.training
            net.eval()
            channels = _input_channels(net)
            try:
                out = net(torch.zeros(2, channels, PROBE_SIZE, PROBE_SIZE))
            except Exception as e:
                raise UserError(f"--backbone {spec} fails on a {PROBE_SIZE} px input ({type(e).__name__}: {e}); "
                                "check the module, or add @cifar / pass a larger --image-size") from None
            finally:
                net.train(was)
        if not isinstance(out, Tensor) or out.ndim not in (2, 4) or (out.ndim == 3 and not tokens_ok):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(f"--backbone {spec} gives {shape}; it must return a feature vector (B, D) or a feature "
                            "map (B, D, h, w)")
        self.gives_map = out.ndim == 4
        self.out_dim = int(out.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.mean((2, 3)) if out.ndim == 4 else out

    def feature_map(self, x: Tensor) -> Tensor:
        """The last spatial feature map (B, D, h, w), before global pooling: what a decoder paints from."""
        if self.gives_map:
            return self.net(x)
        if hasattr(self.net, "forward_features"):  # timm
            out = self.net.forward_features(x)
            if out.ndim == 4:
                return out
            raise UserError(f"--backbone {self.spec} gives tokens, not a spatial map; reconstruction needs a "
                            "convolutional backbone (use context, rotation or simclr with this one)")
        maps: list[Tensor] = []
        pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d)
        hooks = [m.register_forward_hook(lambda _m, _i, o: maps.append(o) if isinstance(o, Tensor) and o.ndim == 4
                                         else None)
                 for m in self.net.modules() if not isinstance(m, pools) and not list(m.children())]
        try:
            self.net(x)
        finally:
            for h in hooks:
                h.remove()
        if not maps:
            raise UserError(f"--backbone {self.spec} has no spatial feature map; reconstruction needs one")
        return maps[-1]


def _user_builder(ref: str) -> Callable[[int], nn.Module]:
    """The class or function `name` of the user's file `path.py:name`, loaded by path (not from sys.path)."""
    path_text, _, name = ref.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"--backbone {ref}: no such file {path}; give path/to/file.py:NAME")
    module_spec = importlib.util.spec_from_file_location(f"pretextlab_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"--backbone {ref}: importing {path} failed ({type(e).__name__}: {e})") from None
    builder = getattr(module, name, None)
    if not callable(builder):
        raise UserError(f"--backbone {ref}: {path} defines no class or function '{name}'")
    return builder


def _input_channels(net: nn.Module) -> int:
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return first.in_channels
    patch = next((m for m in net.modules() if hasattr(m, "in_chans")), None)
    return getattr(patch, "in_chans", 3)


def _drop_linear_head(net: nn.Module, spec: str) -> None:
    """torchvision's classifiers end in one Linear (fc, classifier[-1], heads.head): replace it by Identity."""
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    if last is None:
        raise UserError(f"--backbone {spec} has no linear classification head to take off; use another model")
    _replace(net, last, nn.Identity())


def _set_input_channels(net: nn.Module, channels: int, spec: str) -> None:
    name, conv = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise UserError(f"--backbone {spec} has no first convolution to take {channels} channel(s)")
    _replace(net, name, nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                  bias=conv.bias is not None))


def _cifar_stem(net: nn.Module, spec: str) -> None:
    """The CIFAR stem (He et al. 2016, section 4.2): the first convolution 3x3 with stride 1, the first
    max-pool removed, so a 32 px image is not down to 8 px before the first block."""
    name, conv = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise UserError(f"--backbone {spec}: @cifar needs a convolutional stem; give --image-size instead")
    _replace(net, name, nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None))
    pool = next((n for n, m in net.named_modules() if isinstance(m, nn.MaxPool2d)), None)
    if pool is not None:
        _replace(net, pool, nn.Identity())


def _replace(net: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


def _children_stages(net: nn.Module) -> list[tuple[str, ...]]:
    """A module's top-level children that hold parameters, in order: its stages (a Sequential of blocks,
    such as torchvision's `features`, gives one stage per block)."""
    stages = []
    for name, child in net.named_children():
        blocks = isinstance(child, nn.Sequential) and all(list(c.children()) for c in child.children())
        parts = child.named_children() if blocks else [("", child)]
        stages += [(f"{name}.{sub}" if sub else name,) for sub, m in parts if any(True for _ in m.parameters())]
    return stages


def _timm_stages(net: nn.Module) -> list[tuple[str, ...]]:
    """timm's feature_info modules as stage ends (module order): what comes before the first end (the
    stem) is the first stage, what comes after the last (a head convolution) joins the last."""
    ends = [info["module"] for info in getattr(net, "feature_info", [])]
    if not ends:
        return _children_stages(net)
    order = [n for n, _ in net.named_modules()]
    cuts = sorted({max(i for i, n in enumerate(order) if n == e or n.startswith(e + ".")) for e in ends})
    owners = [n for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    # parameters of the root itself (a ViT's class token, position embedding) are named one by one
    owners = [o for n in owners for o in ([p for p, _ in net.named_parameters(recurse=False)] if n == "" else [n])]
    stages: list[list[str]] = [[] for _ in cuts]
    for name in owners:
        at = order.index(name) if name in order else 0
        stages[next((k for k, c in enumerate(cuts) if at <= c), len(cuts) - 1)].append(name)
    return [tuple(s) for s in stages if s]
