"""Talk3D's audio features: a wav2vec2 CTC model streamed over 20 ms chunks, as the official preprocessing does.

Talk3D reuses RAD-NeRF's ``asr.py``: the 16 kHz waveform is cut into 320-sample chunks (the last may be shorter),
ten chunks of silence lead in, and whenever ``left + middle + right`` = 70 chunks are queued the CTC model runs on
all of them (each run normalised on its own: zero mean, unit variance). Of its 50 Hz logits only the middle
rows are kept — ``[left : T_out - right + 1]`` — and the queue keeps its last ``left + right`` chunks as the next
run's context; when the waveform ends, one last run keeps ``[left : T_out]``. The 44-d logits (the Esperanto
CTC vocabulary of ``cpierse/wav2vec2-large-xlsr-53-esperanto``) are then cut into windows of 16 logit rows every 2
rows (one per 25 fps video frame): window ``k`` holds rows ``2k-8 .. 2k+7``, zero outside. A video frame sees the
8 windows ``k-4 .. k+3`` (zero outside the clip), transposed to ``[8,44,16]``.

Everything here works on the logits, never on the whole clip's windows (``[N,16,44]`` floats are 2.8 KB a frame):
:func:`frame_windows` cuts any frames' windows straight from the logits, so long clips stay small.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelFileError
from ..model_files import (
    WAV2VEC2_LOGIT_DIM,
    WAV2VEC2_MODEL_ID,
    check_wav2vec2_folder,
    default_models_dir,
    find_hub_folder,
)

# The model id and the folder check live with the slot in ``model_files``.
WAV2VEC2_SUBDIR = Path("wav2vec2") / "wav2vec2-large-xlsr-53-esperanto"
LOGIT_DIM = WAV2VEC2_LOGIT_DIM   # the Esperanto CTC vocabulary ([UNK] 42, [PAD] 43)
SAMPLE_RATE = 16_000
CHUNK = 320                   # samples per chunk = per logit row (20 ms)
WINDOW = 16                   # logit rows per video-frame window
WINDOW_STRIDE = 2             # logit rows between windows (50 Hz logits -> 25 fps windows)
FRAME_CONTEXT = (4, 3)        # windows before / after the frame's own (att_mode 2: 8 windows)
NORM_EPS = 1e-7               # Wav2Vec2FeatureExtractor's zero-mean-unit-variance epsilon


@dataclass(frozen=True)
class StreamConfig:
    """The official streaming contexts, in chunks of 20 ms (``asr.py`` defaults ``-l 10 -m 50 -r 10``)."""

    left: int = 10
    middle: int = 50
    right: int = 10
    normalize: bool = True    # the model's feature extractor has do_normalize=True

    @property
    def run_length(self) -> int:
        return self.left + self.middle + self.right


@dataclass(frozen=True)
class StreamStep:
    """One network run: samples ``[start, stop)`` of the padded stream (lead-in silence counted) and the logit
    rows ``[keep_from, keep_to)`` of its output that are kept (``keep_to`` None: to the end)."""

    start: int
    stop: int
    keep_from: int
    keep_to: int | None


def stream_steps(num_samples: int, config: StreamConfig = StreamConfig()) -> list[StreamStep]:
    """The official runs over a waveform of ``num_samples`` (positions in the stream with ``left`` chunks of
    leading silence, so sample ``s`` of the waveform is at ``s + left * 320``)."""
    num_chunks = -(-num_samples // CHUNK)
    lead = config.left * CHUNK
    queued_from, queued = 0, config.left          # queue start (in chunks) and its length
    steps = []
    for chunk in range(num_chunks):
        queued += 1
        if queued >= config.run_length:
            stop = lead + min((chunk + 1) * CHUNK, num_samples)
            steps.append(StreamStep(queued_from * CHUNK, stop, config.left, -config.right + 1 or None))
            keep = config.left + config.right
            queued_from, queued = queued_from + queued - keep, keep
    # the stream ended: one more run on what is queued, keeping every row after the left context
    steps.append(StreamStep(queued_from * CHUNK, lead + num_samples, config.left, None))
    return steps


def conv_frames(num_samples: int) -> int:
    """Output rows of the wav2vec2 feature encoder (stride 320, receptive field 400) for ``num_samples``."""
    return max(0, (num_samples - 400) // CHUNK + 1)


def normalise(values: np.ndarray) -> np.ndarray:
    """``(x - mean) / sqrt(var + 1e-7)`` in float32, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``."""
    values = values.astype(np.float32)
    return (values - values.mean()) / np.sqrt(values.var() + np.float32(NORM_EPS))


def as_float_waveform(waveform: np.ndarray) -> np.ndarray:
    """``[N]`` float32 in [-1,1]: int16 PCM scaled by 1/32768 (exactly as soundfile reads it), floats as they are."""
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"the waveform must be mono [N], got shape {list(waveform.shape)}")
    if waveform.dtype == np.int16:
        return waveform.astype(np.float32) / 32768
    return waveform.astype(np.float32, copy=False)


def stream_inputs(waveform: np.ndarray, config: StreamConfig = StreamConfig()
                  ) -> Iterator[tuple[StreamStep, np.ndarray]]:
    """Every network run of the stream with its model input (``[samples]`` float32, normalised per run)."""
    waveform = as_float_waveform(waveform)
    lead = config.left * CHUNK
    for step in stream_steps(waveform.shape[0], config):
        piece = np.zeros(step.stop - step.start, np.float32)
        begin = max(step.start, lead)
        piece[begin - step.start:] = waveform[begin - lead:step.stop - lead]
        yield step, normalise(piece) if config.normalize else piece


@torch.inference_mode()
def stream_logits(model, waveform: np.ndarray, config: StreamConfig = StreamConfig(),
                  runs_per_batch: int = 8) -> torch.Tensor:
    """The official streamed CTC logits of a clip: ``[M, 44]`` float32 on the CPU, ``M`` = 50 per second.

    Args:
        model: a ``transformers.Wav2Vec2ForCTC`` in eval mode (any device and dtype).
        waveform: ``[N]`` samples at 16 kHz, float in [-1,1] or int16 PCM (scaled by 1/32768 as soundfile reads it).
        config: the streaming contexts (official defaults).
        runs_per_batch: full-length runs sent through the model together (they are independent: each is
            normalised on its own and the model has no state across runs; the results equal one-at-a-time
            runs to float rounding). Memory grows with this, never with the clip's length.
    """
    param = next(model.parameters())
    kept: list[torch.Tensor] = []
    batch: list[tuple[StreamStep, np.ndarray]] = []

    def flush():
        values = torch.from_numpy(np.stack([values for _, values in batch]))
        logits = model(values.to(device=param.device, dtype=param.dtype)).logits.float().cpu()
        kept.extend(row[step.keep_from:step.keep_to] for (step, _), row in zip(batch, logits))
        batch.clear()

    for step, values in stream_inputs(waveform, config):
        if batch and (len(batch) == runs_per_batch or values.shape != batch[0][1].shape):
            flush()
        batch.append((step, values))
    flush()
    return torch.cat(kept)


def num_windows(num_logits: int) -> int:
    """Windows (one per 25 fps frame) of ``num_logits`` logit rows: ``M // 2 + 1``."""
    return num_logits // WINDOW_STRIDE + 1


def frame_windows(logits: torch.Tensor, frames: torch.Tensor | list[int]) -> torch.Tensor:
    """The 8 audio windows each frame sees, cut straight from the logits: ``[F, 8, 44, 16]``.

    Equal to the official ``aud_eo = unfold(logits)`` ``[N,16,44]`` followed by ``get_audio_features(
    aud_eo.permute(0,2,1), i, att_mode=2)`` for each frame ``i``: windows ``i-4 .. i+3``, each holding logit rows
    ``2k-8 .. 2k+7``, zero where a window or a row falls outside the clip.

    Args:
        logits: ``[M, C]`` streamed logits (:func:`stream_logits`).
        frames: ``[F]`` video-frame indices (any order; outside ``[0, N)`` gives zero windows).
    """
    frames = torch.as_tensor(frames, dtype=torch.long).reshape(-1)
    count, channels = logits.shape
    before, after = FRAME_CONTEXT
    window_ids = frames[:, None] + torch.arange(-before, after + 1)                      # [F,8]
    rows = WINDOW_STRIDE * window_ids[..., None] + torch.arange(-WINDOW // 2, WINDOW // 2)   # [F,8,16]
    valid = (rows >= 0) & (rows < count)
    valid &= ((window_ids >= 0) & (window_ids < num_windows(count)))[..., None]
    picked = logits[rows.clamp(0, max(count - 1, 0))] * valid[..., None].to(logits.dtype)   # [F,8,16,C]
    return picked.transpose(-1, -2).contiguous()


def unfold_windows(logits: torch.Tensor) -> torch.Tensor:
    """The official ``aud_eo`` array ``[M//2+1, 16, 44]`` (what ``asr.py --save_feats`` writes)."""
    padded = torch.nn.functional.pad(logits, (0, 0, WINDOW // 2, WINDOW // 2))
    starts = torch.arange(num_windows(logits.shape[0])) * WINDOW_STRIDE
    return padded[starts[:, None] + torch.arange(WINDOW)]


def find_wav2vec2(models_dir: str | Path | None = None) -> Path:
    """The folder holding Talk3D's wav2vec2: ``<models>/wav2vec2/wav2vec2-large-xlsr-53-esperanto`` or the
    Hugging Face cache snapshot.

    Raises:
        ModelFileError: naming the model, the folder searched and how to get it.
    """
    found = find_hub_folder("wav2vec2", models_dir)
    if found is not None:
        return found
    folder = default_models_dir(models_dir) / WAV2VEC2_SUBDIR
    raise ModelFileError(
        f"Talk3D's audio model ({WAV2VEC2_MODEL_ID}, about 1.3 GB) was not found in {folder} nor in the Hugging "
        f"Face cache. Download it once with `r3dp models fetch --talk3d` (or\n  hf download {WAV2VEC2_MODEL_ID} "
        f"--local-dir \"{folder}\"\n), or import "
        "a downloaded snapshot with `r3dp models import PATH` (config.json + model.safetensors or pytorch_model.bin).")


def stream_config_for(folder: str | Path) -> StreamConfig:
    """The streaming contexts with the folder's ``do_normalize`` (``preprocessor_config.json``; default True)."""
    path = Path(folder) / "preprocessor_config.json"
    try:
        normalize = bool(json.loads(path.read_text()).get("do_normalize", True))
    except (OSError, ValueError, AttributeError):
        normalize = True
    return StreamConfig(normalize=normalize)


def load_wav2vec2_folder(folder: str | Path):
    """``Wav2Vec2ForCTC`` (eval mode, CPU float32) from a transformers folder; nothing is downloaded."""
    from transformers import Wav2Vec2ForCTC

    check_wav2vec2_folder(folder)
    try:
        model = Wav2Vec2ForCTC.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"wav2vec2 in {folder} could not be loaded ({exc}); download {WAV2VEC2_MODEL_ID} "
                             "again into that folder.") from None
    return model.eval()


def build_wav2vec2(model_config: dict, state_dict: dict[str, torch.Tensor]):
    """``Wav2Vec2ForCTC`` from a config dict and a state dict with the official keys (strict), eval mode."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from ..checkpoint import load_into

    model = Wav2Vec2ForCTC(Wav2Vec2Config(**model_config))
    load_into(model, state_dict, source="wav2vec2 weights")
    return model.eval()
