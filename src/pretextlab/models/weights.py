"""Pretrained weights into a backbone: read as plain tensors (safetensors, or a checkpoint loaded without
pickle's objects), checked for shape, type and finiteness, loaded strictly, optionally only the first stages."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..io import load_torch


def load_backbone_weights(backbone: nn.Module, state: dict[str, Tensor], source: str,
                          stages: int = 0) -> dict[str, int]:
    """Load pretrained weights strictly: a checkpoint of another backbone is a user error, not a warning.

    stages > 0 takes only the first `stages` stages from `state`; the later ones keep the backbone's
    own (fresh) initialisation. Returns {"tensors": loaded from `source`, "changed": of those, how many differ
    from the fresh initialisation they replaced}: a load that changed nothing is the field's classic silent
    failure (weights saved under other names, or never trained), and the run's config.json records both.
    """
    state = {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("head.")}
    own = backbone.state_dict()
    bad = [k for k in own if not isinstance(state.get(k), Tensor) or state[k].shape != own[k].shape]
    if bad or set(state) - set(own):
        example = (bad or list(set(state) - set(own)))[0]
        raise UserError(f"{source} holds weights of another backbone or input shape (e.g. '{example}'); "
                        "pass --backbone matching the checkpoint")
    if stages:
        if not 0 < stages <= len(backbone.stages):
            raise UserError(f"--transfer-stages {stages}: this backbone has {len(backbone.stages)} stages; "
                            f"use 1 to {len(backbone.stages)}, or 0 for all")
        keep = [prefix for stage in backbone.stages[:stages] for prefix in stage]
        taken = lambda k: any(k == p or k.startswith(f"{p}.") for p in keep)  # noqa: E731
        state = {k: v if taken(k) else own[k] for k, v in state.items()}
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:  # training from NaN/inf weights only produces NaN losses
        raise UserError(f"{source} holds non-finite weights (NaN or inf, e.g. in '{broken}'); refused before training: "
                        "pass weights from a run that did not diverge")
    taken_keys = [k for k in state if not stages or taken(k)]
    changed = sum(1 for k in taken_keys if not torch.equal(state[k].to(own[k].device), own[k]))
    backbone.load_state_dict(state)
    return {"tensors": len(taken_keys), "changed": changed}


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors file or from a pretextlab checkpoint.pt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--init {path}: no such file; pass a checkpoint.pt or a backbone .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = load_torch(path)
    except UserError:
        raise
    except Exception:
        raise UserError(f"{path} is not a readable checkpoint; pass a checkpoint.pt or .safetensors file") from None
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict; pass a checkpoint.pt or .safetensors file")
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if odd is not None:  # ints, strings, nested dicts: not weights, and load_state_dict would fail on them later
        raise UserError(f"{path} holds {type(state[odd]).__name__} values, not only tensors (e.g. '{odd}'); pass a "
                        "checkpoint.pt or .safetensors file of weights")
    return state
