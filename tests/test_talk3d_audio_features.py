"""Talk3D audio features: the official streaming of a wav2vec2 CTC model, its windows, and the model folder checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from r3dp_core.errors import ModelFileError
from r3dp_core.talk3d.audio_features import (
    StreamConfig,
    check_wav2vec2_folder,
    conv_frames,
    frame_windows,
    num_windows,
    stream_logits,
    stream_steps,
    unfold_windows,
)

TINY = {"vocab_size": 44, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
        "conv_dim": [8] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_bias": True, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    return Wav2Vec2ForCTC(Wav2Vec2Config(**TINY)).eval()


def official_stream(model, waveform: np.ndarray, left=10, middle=50, right=10, chunk=320) -> torch.Tensor:
    """RAD-NeRF's asr.py loop written out literally: a queue of chunks, a run per full queue, one at the end."""
    frames = [np.zeros(chunk, np.float32)] * left
    position, feats, terminated = 0, [], False
    while not terminated:
        if position < waveform.shape[0]:
            frames.append(waveform[position:position + chunk])
            position += chunk
            if len(frames) < left + middle + right:
                continue
        else:
            terminated = True
        inputs = np.concatenate(frames)
        if not terminated:
            frames = frames[-(left + right):]
        values = (inputs - inputs.mean()) / np.sqrt(inputs.var() + 1e-7)
        with torch.no_grad():
            logits = model(torch.from_numpy(values.astype(np.float32))[None]).logits[0]
        stop = logits.shape[0] if terminated else min(logits.shape[0], logits.shape[0] - right + 1)
        feats.append(logits[left:stop])
    return torch.cat(feats)


@pytest.mark.parametrize("num_samples", [3_000, 19_200, 19_300, 35_200, 52_800, 52_801])
def test_streamed_logits_equal_the_official_loop_at_clip_edges(tiny_model, num_samples):
    """Short clips (one final run only), exactly one full run, a partial last chunk, and several runs."""
    waveform = np.random.default_rng(num_samples).uniform(-0.5, 0.5, num_samples).astype(np.float32)
    expected = official_stream(tiny_model, waveform)
    got = stream_logits(tiny_model, waveform)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_batched_runs_equal_one_run_at_a_time(tiny_model):
    waveform = np.random.default_rng(1).uniform(-0.5, 0.5, 16_000 * 4).astype(np.float32)
    one = stream_logits(tiny_model, waveform, runs_per_batch=1)
    batched = stream_logits(tiny_model, waveform, runs_per_batch=8)
    torch.testing.assert_close(batched, one, atol=2e-5, rtol=1e-5)


def test_int16_pcm_is_scaled_as_soundfile_reads_it(tiny_model):
    pcm = np.random.default_rng(2).integers(-20000, 20000, 24_000).astype(np.int16)
    torch.testing.assert_close(stream_logits(tiny_model, pcm),
                               stream_logits(tiny_model, pcm.astype(np.float32) / 32768), atol=0, rtol=0)


def test_stream_steps_follow_the_official_queue():
    # 52,800 samples = 165 chunks: runs after 60, 110 and 160 chunks, then the 25 queued ones (the shared case)
    steps = stream_steps(52_800)
    assert [s.stop - s.start for s in steps] == [22_400, 22_400, 22_400, 8_000]
    assert [conv_frames(s.stop - s.start) for s in steps] == [69, 69, 69, 24]
    assert [s.keep_to for s in steps] == [-9, -9, -9, None] and {s.keep_from for s in steps} == {10}
    # a clip shorter than one run: a single final run over the lead-in and the clip
    (only,) = stream_steps(1_000)
    assert (only.start, only.stop, only.keep_to) == (0, 3_200 + 1_000, None)
    # the last chunk filling the queue still leaves a final run over the 20 chunks of context
    assert [s.stop - s.start for s in stream_steps(60 * 320)] == [22_400, 6_400]


def official_windows(logits: torch.Tensor, index: int) -> torch.Tensor:
    """asr.py's unfold then the trainer's get_audio_features(att_mode=2), as the case describes them."""
    m = logits.shape[0]
    aud_eo = torch.nn.functional.unfold(logits.view(-1, 44).permute(1, 0).reshape(1, 44, m, 1), (16, 1),
                                        padding=(8, 0), stride=(2, 1)).view(44, 16, -1).permute(2, 1, 0)
    features = aud_eo.permute(0, 2, 1)
    left, right, pad_left, pad_right = index - 4, index + 4, 0, 0
    if left < 0:
        pad_left, left = -left, 0
    if right > features.shape[0]:
        pad_right, right = right - features.shape[0], features.shape[0]
    picked = features[left:right]
    if pad_left:
        picked = torch.cat([torch.zeros_like(picked[:1]).repeat(pad_left, 1, 1), picked])
    if pad_right:
        picked = torch.cat([picked, torch.zeros_like(picked[:1]).repeat(pad_right, 1, 1)])
    return picked


@pytest.mark.parametrize("num_logits", [1, 7, 164, 165])
def test_frame_windows_equal_unfold_and_official_selection(num_logits):
    logits = torch.randn(num_logits, 44, generator=torch.Generator().manual_seed(num_logits))
    n = num_windows(num_logits)
    assert unfold_windows(logits).shape == (n, 16, 44)
    frames = sorted({0, 1, 3, n // 2, n - 2, n - 1} - {-1})
    got = frame_windows(logits, frames)
    assert got.shape == (len(frames), 8, 44, 16)
    for row, index in zip(got, frames):
        torch.testing.assert_close(row, official_windows(logits, index), atol=0, rtol=0)


def test_frame_windows_outside_the_clip_are_silent():
    logits = torch.randn(40, 44)
    assert frame_windows(logits, [-10, num_windows(40) + 5]).abs().max() == 0


def test_wav2vec2_folder_checks_name_the_model(tmp_path):
    with pytest.raises(ModelFileError, match="cannot be read"):
        check_wav2vec2_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert", "vocab_size": 44}))
    with pytest.raises(ModelFileError, match="'hubert' model, not wav2vec2.*esperanto"):
        check_wav2vec2_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "vocab_size": 32}))
    with pytest.raises(ModelFileError, match="32 output symbols"):
        check_wav2vec2_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "vocab_size": 44}))
    with pytest.raises(ModelFileError, match="no weights"):
        check_wav2vec2_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    check_wav2vec2_folder(tmp_path)


def test_stream_config_is_the_official_one():
    config = StreamConfig()
    assert (config.left, config.middle, config.right, config.run_length) == (10, 50, 10, 70)
