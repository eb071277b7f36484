"""Wav2Lip's lip-sync expert (``SyncNet_color``, ``lipsync_expert.pth``), its melspectrogram and the sync loss.

The network (Wav2Lip ``models/syncnet.py``): a face encoder on the lower halves of five RGB→BGR frames stacked on
channels ``[B,15,48,96]`` and an audio encoder on 16 mel frames ``[B,1,80,16]``, each a stack of Wav2Lip ``Conv2d``
blocks (conv + BatchNorm, optional residual, ReLU) ending in a 512×1×1 map; both embeddings are L2-normalised and
their cosine is the probability that audio and mouth are in sync. Keys: ``face_encoder.N.conv_block.0.*`` (conv),
``face_encoder.N.conv_block.1.*`` (BatchNorm), same for ``audio_encoder``. The file is a training checkpoint
(``{"state_dict": ..., "optimizer": ..., "global_step": ...}``) whose keys may carry a ``module.`` prefix.

The loss (Talk3D ``get_sync_loss`` → ``cosine_loss``): ``BCELoss(cosine(a, v), 1)``.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from .frozen import FrozenNetwork

MEL_BANDS = 80
MEL_FRAMES = 16                 # one window: 0.2 s of audio (hop 12.5 ms)
SYNC_FRAMES = 5                 # video frames per window (25 fps)
FACE_SHAPE = (3 * SYNC_FRAMES, 48, 96)
EMBEDDING_DIM = 512

# (in, out, kernel, stride, padding, residual) of each Wav2Lip ``Conv2d`` block, in order.
FACE_ENCODER = (
    (15, 32, 7, 1, 3, False),
    (32, 64, 5, (1, 2), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True), (512, 512, 3, 1, 1, True),
    (512, 512, 3, 2, 1, False), (512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
)
AUDIO_ENCODER = (
    (1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True), (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False),
)


class ConvBlock(nn.Module):
    """Wav2Lip's ``Conv2d`` block: ``relu(bn(conv(x)) [+ x])``. ``batch_statistics``: normalise with the batch's own
    statistics instead of the running ones (see :class:`SyncNet`); the running statistics are never updated."""

    def __init__(self, cin: int, cout: int, kernel, stride, padding, residual: bool):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual
        self.batch_statistics = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self.conv_block
        out = conv(x)
        if self.batch_statistics:
            out = F.batch_norm(out, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
        else:
            out = norm(out)
        if self.residual:
            out = out + x
        return F.relu(out)


class SyncNet(FrozenNetwork):
    """Wav2Lip ``SyncNet_color``. ``forward(mel, faces)``: mel ``[B,1,80,16]`` (Wav2Lip melspectrogram values in
    [-4, 4], see :func:`wav2lip_mel`), faces ``[B,15,48,96]`` (five BGR frames in [0, 1], lower half of the 96²
    mouth crop, stacked on channels) → ``(audio_embedding, face_embedding)``, each ``[B,512]`` with unit L2 norm
    and non-negative entries.

    ``batch_statistics`` (default False: the running statistics, so a window's score does not depend on the other
    windows of its batch). The official Talk3D trainer never puts the network in eval mode, so its BatchNorm layers
    use each batch's statistics; set ``batch_statistics = True`` to reproduce that.
    """

    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(*(ConvBlock(*spec) for spec in FACE_ENCODER))
        self.audio_encoder = nn.Sequential(*(ConvBlock(*spec) for spec in AUDIO_ENCODER))
        self.eval()

    @property
    def batch_statistics(self) -> bool:
        return self.face_encoder[0].batch_statistics

    @batch_statistics.setter
    def batch_statistics(self, value: bool) -> None:
        for block in (*self.face_encoder, *self.audio_encoder):
            block.batch_statistics = bool(value)

    def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if mel.ndim != 4 or tuple(mel.shape[1:]) != (1, MEL_BANDS, MEL_FRAMES):
            raise InputError(f"SyncNet's audio input is [B,1,{MEL_BANDS},{MEL_FRAMES}] mel windows; got "
                             f"{tuple(mel.shape)}.")
        if faces.ndim != 4 or tuple(faces.shape[1:]) != FACE_SHAPE or faces.shape[0] != mel.shape[0]:
            raise InputError(f"SyncNet's face input is [B,{','.join(map(str, FACE_SHAPE))}] (five lower-half mouth "
                             f"crops on channels) with one per mel window; got {tuple(faces.shape)} for "
                             f"{mel.shape[0]} windows.")
        audio_embedding = self.audio_encoder(mel).flatten(1)
        face_embedding = self.face_encoder(faces).flatten(1)
        return F.normalize(audio_embedding, p=2, dim=1), F.normalize(face_embedding, p=2, dim=1)


def sync_probability(audio_embedding: torch.Tensor, face_embedding: torch.Tensor) -> torch.Tensor:
    """``[B,512]`` × 2 → ``[B]`` in [0, 1]: the cosine of the embeddings, the probability the official loss feeds to
    ``BCELoss``. The ReLU embeddings make it non-negative already; the clamp only stops rounding from leaving
    [0, 1], where ``BCELoss`` would refuse it."""
    return F.cosine_similarity(audio_embedding, face_embedding, dim=1).clamp(0.0, 1.0)


def sync_loss(audio_embedding: torch.Tensor, face_embedding: torch.Tensor) -> torch.Tensor:
    """Talk3D's lip-sync loss: ``BCE(sync_probability, 1)`` averaged over the batch → scalar ≥ 0. As in
    ``nn.BCELoss``, the log is clamped at -100, so a probability of 0 costs 100."""
    probability = sync_probability(audio_embedding, face_embedding)
    return F.binary_cross_entropy(probability, torch.ones_like(probability))


# --- Wav2Lip's melspectrogram (audio.py with hparams.py) ------------------------------------------------------------

SAMPLE_RATE = 16000
N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
#: Talk3D pins librosa 0.9.2, whose ``stft`` pads the signal ends with zeros ("constant"); Wav2Lip itself trained
#: the expert under librosa 0.7 ("reflect"). Only the first and last two frames differ.
TALK3D_PAD_MODE = "constant"


@cache
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=MEL_BANDS, fmin=FMIN, fmax=FMAX)


def wav2lip_mel(wav16k: np.ndarray, *, pad_mode: str = TALK3D_PAD_MODE) -> np.ndarray:
    """Wav2Lip's ``audio.melspectrogram``: ``[N]`` mono samples at 16 kHz in [-1, 1] → ``[80, 1 + N // 200]``
    float32 in [-4, 4] (one column per 12.5 ms; video frame ``i`` at 25 fps starts at column ``⌊80·i/25⌋``).

    Pre-emphasis 0.97, STFT (n_fft 800, hop 200, Hann window 800, centred), magnitude, 80 Slaney mel bands
    55–7600 Hz, ``20·log10(max(1e-5, ·)) - 20`` dB, then mapped from [-100, 0] dB to [-4, 4] and clipped.

    Raises:
        InputError: not a non-empty one-dimensional float array of finite samples.
    """
    import librosa
    from scipy.signal import lfilter

    samples = np.asarray(wav16k)
    if samples.ndim != 1 or samples.size == 0 or not np.issubdtype(samples.dtype, np.floating):
        raise InputError(f"the Wav2Lip melspectrogram needs mono 16 kHz float samples in [-1, 1] as a non-empty 1-D "
                         f"array; got an array of shape {samples.shape} ({samples.dtype}).")
    if not np.all(np.isfinite(samples)):
        raise InputError("the audio has NaN or infinite samples; decode it again.")
    # float64 as in the official code (scipy's lfilter returns float64 for librosa's float32 samples)
    emphasised = lfilter([1.0, -PREEMPHASIS], [1.0], samples.astype(np.float64))
    spectrum = np.abs(librosa.stft(y=emphasised, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
                                   pad_mode=pad_mode))
    floor = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    decibels = 20 * np.log10(np.maximum(floor, np.dot(_mel_basis(), spectrum))) - REF_LEVEL_DB
    scaled = (2 * MAX_ABS_VALUE) * ((decibels - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)
