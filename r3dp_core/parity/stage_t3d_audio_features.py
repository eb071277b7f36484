"""Parity stage ``t3d_audio_features``: waveform → streamed wav2vec2 CTC logits → ``aud_eo`` windows → the 8
windows each selected frame sees.

Official call: ``asr.py --wav aud.wav --save_feats`` (RAD-NeRF's streaming ASR, contexts 10/50/10 chunks) on the
case's tiny ``Wav2Vec2ForCTC`` (``config_t3d_wav2vec2_tiny.json``, synthetic weights from
``manifest_t3d_wav2vec2_tiny.json``), then ``get_audio_features(aud_eo_t, i, att_mode=2)`` for every frame in
``selected_windows.selected_frames``. The model inputs of every network run are checked as
``dbg_input_values_step<k>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..talk3d.audio_features import (
    StreamConfig,
    build_wav2vec2,
    frame_windows,
    stream_inputs,
    stream_logits,
    unfold_windows,
)

if TYPE_CHECKING:
    from .case import ParityCase

MODEL = "t3d_wav2vec2_tiny"


def _waveform(case: ParityCase) -> np.ndarray:
    if "stream" in case.tensors_meta:
        return case.tensor("stream").numpy().astype(np.float32)
    return case.tensor("waveform_i16").numpy().astype(np.int16)


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``logits [M,44]``, ``aud_eo [M//2+1,16,44]``, ``selected_windows [F,8,44,16]`` and the per-run inputs."""
    config = case.config(MODEL)
    model = build_wav2vec2(config["model_config"], case.state_dict(MODEL)).to(device)
    stream = StreamConfig(normalize=bool(config.get("feature_extractor", {}).get("do_normalize", True)))
    waveform = _waveform(case)
    logits = stream_logits(model, waveform, stream)
    outputs = {"logits": logits, "aud_eo": unfold_windows(logits)}
    selected = case.tensors_meta.get("selected_windows", {}).get("selected_frames")
    if selected is not None:
        outputs["selected_windows"] = frame_windows(logits, selected)
    for index, (_, values) in enumerate(stream_inputs(waveform, stream)):
        outputs[f"dbg_input_values_step{index}"] = torch.from_numpy(values)
    return outputs
