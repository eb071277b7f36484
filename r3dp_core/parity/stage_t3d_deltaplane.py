"""Parity stage ``t3d_deltaplane``: Talk3D's Deltaplane U-Net, identity tri-plane + tokens → ΔP.

Official call: ``Deltaplane_Predictor(P, tokens)[0]``, once in eval mode (BatchNorm running statistics) and once,
with fresh weights, in train mode (batch statistics; the running statistics are updated in place). Inputs:
``plane_*`` ``[1,96,256,256]`` (float16-exact), ``tokens_eval``, ``tokens_train``. Outputs: ``delta_eval``,
``delta_train``, the bottleneck in/outputs ``dbg_*`` and the updated BN buffers ``bn_after_train.<module>.<buffer>``.
Each call's planes are the ones its output's ``meaning`` names (``cat([plane_A, plane_B], 0)``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..talk3d.deltaplane import DeltaplanePredictor
from .stage_t3d_tokens import weights_model

if TYPE_CHECKING:
    from .case import ParityCase

PREFIX = "deltaplane_predictor."
BN_PREFIX = "bn_after_train."
_PLANES = re.compile(r"cat\(\s*\[([\w\s,]+)\]\s*,\s*0\s*\)")


def build_model(case: ParityCase) -> DeltaplanePredictor:
    """A fresh U-Net with the case's synthetic weights under ``deltaplane_predictor.`` (strict)."""
    weights = {k[len(PREFIX):]: v for k, v in case.state_dict(weights_model(case)).items() if k.startswith(PREFIX)}
    model = DeltaplanePredictor()
    load_into(model, weights, source=f"synthetic weights under {PREFIX}")
    return model


def call_planes(case: ParityCase, output: str, batch: int) -> torch.Tensor:
    """The identity planes of the call producing ``output``: the ``cat([...], 0)`` its meaning names, else every
    ``plane_*`` input in order; the first ``batch`` rows (the trainer's ``ID_triplane[:B]``)."""
    meaning = case.tensors_meta.get(output, {}).get("meaning", "")
    if m := _PLANES.search(meaning):
        names = [n.strip() for n in m.group(1).split(",") if n.strip()]
    else:
        names = [n for n in case.names("input") if n.startswith("plane_")]
    planes = torch.cat([case.tensor(n) for n in names], dim=0)
    if planes.shape[0] < batch:
        raise ValueError(f"{case.path.name}: {output} needs {batch} planes, the inputs {names} hold {planes.shape[0]}")
    return planes[:batch]


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full-size ΔP (eval and train mode), the bottleneck intermediates and the BN buffers after the train call."""
    outputs: dict[str, torch.Tensor] = {}
    names = set(case.tensors_meta)
    for mode in ("eval", "train"):
        if f"delta_{mode}" not in names:
            continue
        model = build_model(case).to(device).train(mode == "train")
        tokens = case.tensor(f"tokens_{mode}").to(device)
        planes = call_planes(case, f"delta_{mode}", tokens.shape[0]).to(device)
        out = model.forward_with_intermediates(planes, tokens)
        outputs[f"delta_{mode}"] = out["delta"]
        outputs[f"dbg_transformer_{mode}"] = out["transformer"]
        outputs[f"dbg_downnet_{mode}"] = out["downnet"]
        if mode == "train":
            state = model.state_dict()
            for name in names:
                if name.startswith(BN_PREFIX):
                    shape = case.tensors_meta[name].get("shape")
                    value = state[name[len(BN_PREFIX):]]
                    outputs[name] = value.reshape(shape) if shape is not None else value
    return outputs
