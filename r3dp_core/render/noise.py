"""The renderer's random draws for a clip, computed on the target device by a counter-based hash.

Every uniform is a pure function of ``(seed, frame, ray, sample)``: a frame renders the same whatever chunk it
falls in, and the same on every device, because the hash is plain integer arithmetic that never overflows
int64 (32-bit words times multipliers below 2^31), so CPU, CUDA and MPS compute it bit for bit alike.

Per frame, two 32-bit keys ``k0, k1`` are absorbed from the seed's two words and the frame index. The uniforms of
frame ``f`` come from its counter ``c = ray * (S + F) + j`` (``j < S``: the coarse jitter of sample ``j``;
``j >= S``: the importance uniform ``j - S``) as ``u = hash(hash(c ^ k0) ^ k1) >> 8`` scaled by 2^-24. For a fixed
frame the map from counter to value is a bijection, so no two draws of one frame repeat; across frames the two
independent keys leave no structure between frames (a repeated frame needs both keys to collide, 2^-64).
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .renderer import RenderNoise

_WORD = 0xFFFFFFFF
# A two-round 32-bit integer hash (xorshift-multiply, shifts 16/15/15) with multipliers below 2^31, so that
# ``word * multiplier`` stays below 2^63. Each step is invertible on 32-bit words, so the hash is a bijection.
_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
_SHIFTS = (16, 15, 15)
# Salts that make a frame's two keys two unrelated hashes of the same (seed, frame).
_KEY_SALTS = (0x9E3779B9, 0x85EBCA77)
_MANTISSA_BITS = 24     # float32 represents every multiple of 2^-24 in [0, 1) exactly
# Elements hashed at once. On the CPU the hash is memory bound: 256 KiB int64 temporaries stay in cache (two to
# five times faster than whole frames), and blocks no larger than torch's intra-op grain size (32768) run each op
# on the calling thread, without the thread barriers that stall for milliseconds on a busy CPU (2.2 s instead of
# 12 ms per frame with two threads on a shared two-core machine). On accelerators 32 MiB per temporary (2.7
# frames of 128² rays x 96 samples) keeps the kernel launches few (about 25 per block) and the transient memory
# far below the renderer's.
CPU_ELEMENTS_PER_BLOCK = 1 << 15
ACCELERATOR_ELEMENTS_PER_BLOCK = 1 << 22


def hash32(words: torch.Tensor) -> torch.Tensor:
    """Mix int64 ``words`` holding values in [0, 2^32) into well-spread values in [0, 2^32), in place."""
    scratch = torch.empty_like(words)
    for shift, multiplier in zip(_SHIFTS, _MULTIPLIERS):
        words.bitwise_xor_(torch.bitwise_right_shift(words, shift, out=scratch))
        words.mul_(multiplier).bitwise_and_(_WORD)
    return words.bitwise_xor_(torch.bitwise_right_shift(words, _SHIFTS[-1], out=scratch))


def frame_keys(frame_ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 32-bit keys ``[N]`` (int64) of each frame index in ``frame_ids [N]`` under ``seed``.

    Any Python integer seed works; it is taken modulo 2^64 (ComfyUI seeds go up to 2^64 - 1).
    """
    seed %= 1 << 64
    seed_words = (seed & _WORD, seed >> 32)
    frames = frame_ids.to(torch.int64) & _WORD
    keys = []
    for salt in _KEY_SALTS:
        key = hash32(torch.full_like(frames, salt) ^ seed_words[0])
        key = hash32(key ^ seed_words[1])
        keys.append(hash32(key ^ frames))
    return keys[0], keys[1]


def counter_uniforms(keys: tuple[torch.Tensor, torch.Tensor], counters: torch.Tensor) -> torch.Tensor:
    """Float32 uniforms in [0, 1) on a 2^-24 grid for ``counters [R,K]`` (int64 in [0, 2^32)) under per-row
    keys ``[R,1]``; ``counters`` is consumed."""
    words = hash32(hash32(counters ^ keys[0]) ^ keys[1])
    return words.bitwise_right_shift_(32 - _MANTISSA_BITS).float().mul_(2.0 ** -_MANTISSA_BITS)


def frame_noise(frame_ids: range, num_rays: int, coarse: int, fine: int, seed: int,
                device: torch.device | str = "cpu") -> RenderNoise:
    """The renderer's two random draws for the given frames, computed on ``device``.

    Args:
        frame_ids: the clip's frame indices of this chunk.
        num_rays: rays per frame (``resolution ** 2``).
        coarse, fine: samples per ray of the coarse and the importance pass.
        seed: the clip's seed.
        device: where the noise is computed and returned.

    Returns:
        ``RenderNoise`` with stratified ``[N,num_rays,coarse,1]`` and importance ``[N*num_rays,fine]``, float32
        uniforms in [0, 1), each a pure function of (seed, frame, ray, sample): the same for a frame in any chunk
        and on any device.
    """
    device = torch.device(device)
    per_ray = coarse + fine
    if num_rays * per_ray > _WORD + 1:
        raise InputError(f"{num_rays} rays x {per_ray} samples exceed the 2^32 draws a frame can have")
    frames = torch.arange(frame_ids.start, frame_ids.stop, frame_ids.step, dtype=torch.int64, device=device)
    n_frames, n_rows = frames.numel(), frames.numel() * num_rays
    key0, key1 = frame_keys(frames, seed)
    stratified = torch.empty(n_rows, coarse, device=device)
    importance = torch.empty(n_rows, fine, device=device)
    sample_index = torch.arange(per_ray, dtype=torch.int64, device=device)
    elements = CPU_ELEMENTS_PER_BLOCK if device.type == "cpu" else ACCELERATOR_ELEMENTS_PER_BLOCK
    rows_per_block = max(elements // per_ray, 1)
    # Blocks of (frame, ray) rows bound the temporaries; every row is hashed on its own, so the blocking never
    # changes a value.
    for begin in range(0, n_rows, rows_per_block):
        rows = torch.arange(begin, min(begin + rows_per_block, n_rows), dtype=torch.int64, device=device)
        frame_of_row = (rows // num_rays)[:, None]
        counters = (rows % num_rays)[:, None] * per_ray + sample_index
        values = counter_uniforms((key0[frame_of_row], key1[frame_of_row]), counters)
        stratified[begin:begin + len(rows)] = values[:, :coarse]
        importance[begin:begin + len(rows)] = values[:, coarse:]
    return RenderNoise(stratified.reshape(n_frames, num_rays, coarse, 1), importance)
