"""HuBERT speech features as the official ``extract_hubert.py`` computes them.

``facebook/hubert-large-ls960-ft`` run as ``transformers.HubertModel`` (the CTC head is not used); the
feature is ``last_hidden_state``: 1024-d at 50 Hz (conv stride 320 samples, receptive field 400). The
official extractor normalises the whole utterance to zero mean and unit variance, then runs the model on
fixed clips of 320,080 samples that start every 320,000 samples, so attention never spans more than 20 s.
The model is only ever read from disk: the models folder or the Hugging Face cache, never downloaded here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..model_files import HUBERT_FEATURE_DIM, HUBERT_MODEL_ID, default_models_dir, find_hub_folder

# The model id, pinned revision and the folder check (``check_hubert_folder``) live with the slot in ``model_files``.
HUBERT_SUBDIR = Path("hubert") / "hubert-large-ls960-ft"
FEATURE_DIM = HUBERT_FEATURE_DIM
HOP = 320                    # samples per feature frame (20 ms)
RECEPTIVE_FIELD = 400
CLIP_STRIDE = 320_000        # official clip starts: every 1000 frames
CLIP_SAMPLES = CLIP_STRIDE + RECEPTIVE_FIELD - HOP   # 320,080 samples = exactly 1000 frames
PAD_MULTIPLE = 8             # the A2M model needs a multiple of 8 frames at 50 Hz


def num_frames(num_samples: int) -> int:
    """HuBERT frames of a 16 kHz clip: ``(N - 80) // 320`` (0 below 400 samples)."""
    return max(0, (num_samples - (RECEPTIVE_FIELD - HOP)) // HOP)


def padded_num_frames(frames: int) -> int:
    """``frames`` rounded up to the multiple of 8 the official batch zero-pads to."""
    return -(-frames // PAD_MULTIPLE) * PAD_MULTIPLE


def clip_bounds(num_samples: int) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the official HuBERT clips for a clip of ``num_samples``.

    Every full 20 s stretch is one clip extended by 80 samples (so its 1000 frames tile the timeline
    without a gap); the remainder is one more clip if it holds at least one receptive field.
    """
    bounds = [(start, min(start + CLIP_SAMPLES, num_samples))
              for start in range(0, num_samples - CLIP_STRIDE + 1, CLIP_STRIDE)]
    rest = (num_samples // CLIP_STRIDE) * CLIP_STRIDE
    if num_samples - rest >= RECEPTIVE_FIELD:
        bounds.append((rest, num_samples))
    return bounds


def find_hubert(models_dir: str | Path | None = None) -> Path:
    """The folder holding HuBERT-large: ``<models>/hubert/hubert-large-ls960-ft`` or the HF cache snapshot.

    Raises:
        ModelFileError: with the model id, the folder searched and the command that fetches it.
    """
    found = find_hub_folder("hubert", models_dir)
    if found is not None:
        return found
    folder = default_models_dir(models_dir) / HUBERT_SUBDIR
    raise ModelFileError(
        f"HuBERT ({HUBERT_MODEL_ID}, about 1.2 GB) is needed for audio-driven motion but was not found in "
        f"{folder} nor in the Hugging Face cache. Download it once with `r3dp models fetch` (or\n"
        f"  hf download {HUBERT_MODEL_ID} --local-dir \"{folder}\"\n"
        f"; older huggingface_hub: huggingface-cli download ...), or import a downloaded snapshot with "
        f"`r3dp models import PATH` (config.json + model.safetensors or pytorch_model.bin).")


def load_hubert(models_dir: str | Path | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32):
    """``HubertModel`` (eval mode) from the local folder or cache; nothing is downloaded.

    ``dtype`` fp16/bf16 is for GPUs; features always leave ``hubert_features`` as float32.
    """
    return load_hubert_folder(find_hubert(models_dir)).to(device=device, dtype=dtype)


def load_hubert_folder(folder: str | Path):
    """``HubertModel`` (eval mode, CPU float32) from a transformers folder; refuses one without 1024-d features."""
    from transformers import HubertModel

    try:
        model = HubertModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"HuBERT in {folder} could not be loaded ({exc}); download {HUBERT_MODEL_ID} again "
                             "into that folder.") from None
    if model.config.hidden_size != FEATURE_DIM:
        raise ModelFileError(f"{folder} holds a HuBERT with {model.config.hidden_size}-d features; the audio model "
                             f"needs {HUBERT_MODEL_ID} (1024-d).")
    return model.eval()


def _as_float(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1,1): 16-bit PCM is scaled as soundfile reads it (exact), floats pass through."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768
    return samples.astype(np.float32)


def _normaliser(channel: np.ndarray) -> tuple[np.float32, np.float32]:
    """Whole-utterance mean and ``sqrt(var + 1e-7)`` (Wav2Vec2FeatureExtractor, float32 results).

    Sums run in float64 one block at a time, so no copy of the clip is made; numpy's float32 pairwise
    sums in the official processor differ from these by a few float32 ulps at most.
    """
    total, squares = 0.0, 0.0
    for start in range(0, channel.shape[0], CLIP_STRIDE):
        block = _as_float(channel[start:start + CLIP_STRIDE]).astype(np.float64)
        total += block.sum()
        squares += np.dot(block, block)
    n = channel.shape[0]
    mean = total / n
    var = max(squares / n - mean * mean, 0.0)
    return np.float32(mean), np.sqrt(np.float32(var) + np.float32(1e-7))


@torch.inference_mode()
def iter_hubert_clips(model, channel: np.ndarray) -> Iterator[torch.Tensor]:
    """Features clip by clip, in order: ``[n_i, 1024]`` float32 on the model's device; the clips together
    hold exactly ``num_frames(len(channel))`` frames.

    Args:
        model: a ``HubertModel`` (any dtype/device).
        channel: ``[N]`` samples at 16 kHz: int16 PCM (``Audio16k.pcm[0]``, read without a float copy) or
            floats in [-1,1] (``Audio16k.hubert_channel()``).
    """
    param = next(model.parameters())
    mean, scale = _normaliser(channel)
    for start, end in clip_bounds(channel.shape[0]):
        clip = (_as_float(channel[start:end]) - mean) / scale
        values = torch.from_numpy(clip)[None].to(device=param.device, dtype=param.dtype)
        yield model(values).last_hidden_state[0].float()


def hubert_features(model, channel: np.ndarray) -> torch.Tensor:
    """All features of a clip, zero-padded at the end to a multiple of 8 frames: ``[T50p, 1024]`` float32."""
    frames = num_frames(channel.shape[0])
    feats = torch.cat(list(iter_hubert_clips(model, channel)))[:frames]
    pad = padded_num_frames(frames) - frames
    return torch.nn.functional.pad(feats, (0, 0, 0, pad))
