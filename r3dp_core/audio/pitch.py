"""Fundamental frequency (f0) as the official pipeline extracts it, without Praat installed.

The official code runs Praat through ``parselmouth``: ``Sound(wav, 16000).to_pitch_ac(time_step=0.02,
voicing_threshold=0.6, pitch_floor=80, pitch_ceiling=750)``, every other setting at Praat's default, and
keeps ``selected_array['frequency']`` (Hz, 0 = unvoiced). ``praat_pitch_ac`` re-implements that analysis
(Boersma 1993: Hann-windowed autocorrelation divided by the window's own autocorrelation, sinc-interpolated
peaks refined with Brent's method, then a Viterbi path through the per-frame candidates) in numpy, so r3dp
needs no GPL binary. ``official_f0(..., method="parselmouth")`` runs the official library instead when it is
installed; on the shared test clips both give the same float32 f0, bit for bit.

``official_f0`` adds the official framing around the analysis (zero padding of the wav, alignment to the
mel-frame count); the model's pitch quantiser (``f0_to_coarse``) belongs to the model, in ``models.a2m_vae``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..defaults import SAMPLE_RATE
from ..errors import R3DPError

HOP = 320        # 20 ms at 16 kHz: one f0 value per HuBERT frame
MEL_FFT = 512    # the official mel STFT (center=False) only fixes the number of f0 frames

F0_METHODS = ("praat", "parselmouth")

_LOG2E = 1.4426950408889634        # Praat's log2(x) is ln(x)·log2(e)
_SQRT_EPS = math.sqrt(2.0 ** -53)  # Brent's tolerance scale: sqrt of LAPACK's dlamch('E')
_GOLDEN = 0.3819660112501051       # 1 - golden ratio
_BRENT_TOL = 1e-10
_BRENT_MAX_ITER = 60
_FIRST_PASS_DEPTH = 30             # sinc depth of the candidate-ranking strengths
_REFINE_DEPTH, _REFINE_DEPTH_HIGH = 70, 700


@dataclass(frozen=True)
class PraatPitchSettings:
    """Praat ``To Pitch (ac)`` settings; the defaults are the official call (the rest are Praat defaults)."""

    time_step: float = 0.02
    pitch_floor: float = 80.0
    pitch_ceiling: float = 750.0
    voicing_threshold: float = 0.6
    silence_threshold: float = 0.03
    octave_cost: float = 0.01
    octave_jump_cost: float = 0.35
    voiced_unvoiced_cost: float = 0.14
    max_candidates: int = 15
    periods_per_window: float = 3.0


@dataclass(frozen=True)
class _Plan:
    """Frame geometry of one analysis, from Praat's own double-precision expressions (0-based samples)."""

    dx: float
    x1: float
    t1: float
    time_step: float
    ceiling: float
    num_frames: int
    nsamp_period: int
    halfnsamp_period: int
    nsamp_window: int
    halfnsamp_window: int
    maximum_lag: int
    nsamp_fft: int
    brent_ixmax: int

    @classmethod
    def make(cls, num_samples: int, sample_rate: float, s: PraatPitchSettings) -> _Plan | None:
        dx = 1.0 / sample_rate
        duration = dx * num_samples
        if num_samples == 0 or s.pitch_floor < s.periods_per_window / duration:
            return None  # shorter than one analysis window (Praat refuses): no frames
        nsamp_period = math.floor(1.0 / dx / s.pitch_floor)
        dt_window = s.periods_per_window / s.pitch_floor
        half = math.floor(dt_window / dx) // 2 - 1
        nsamp_window = half * 2
        maximum_lag = min(math.floor(nsamp_window / s.periods_per_window) + 2, nsamp_window)
        num_frames = math.floor((duration - dt_window) / s.time_step) + 1
        x1 = 0.5 * dx
        mid_time = x1 - 0.5 * dx + 0.5 * duration
        t1 = mid_time - 0.5 * (num_frames * s.time_step) + 0.5 * s.time_step
        nsamp_fft = 1
        while nsamp_fft < nsamp_window * 1.5:  # zero-pad by half a window so the circular AC does not wrap
            nsamp_fft *= 2
        ceiling = min(s.pitch_ceiling, 0.5 / dx)
        return cls(dx, x1, t1, s.time_step, ceiling, num_frames, nsamp_period, nsamp_period // 2 + 1, nsamp_window,
                   half, maximum_lag, nsamp_fft, math.floor(nsamp_window * 0.5))

    def left_samples(self, frames: np.ndarray) -> np.ndarray:
        """0-based index of the sample at or just before each frame's centre time."""
        t = self.t1 + frames.astype(np.float64) * self.time_step
        return np.floor((t - self.x1) / self.dx).astype(np.int64)


@dataclass
class _Candidates:
    """Per-frame pitch candidates; slot 0 is the always-present unvoiced candidate (frequency 0)."""

    frequency: np.ndarray   # [F, M] Hz, 0 in unused slots
    strength: np.ndarray    # [F, M]
    count: np.ndarray       # [F] used slots (>= 1)
    intensity: np.ndarray   # [F] local peak / global peak, clipped to 1


class _Samples:
    """Mono samples read on demand as float64 (Praat works in doubles), zeros past the end.

    Either a float ``[N]`` array, or 16-bit PCM ``[C,N]`` whose channel mean is formed per read with the same
    float32 steps as ``Audio16k.pitch_mono`` (identical values), so no mono copy of a long clip is made.
    """

    def __init__(self, samples: np.ndarray):
        self._x = samples
        self.length = samples.shape[-1]

    def _mono(self, columns) -> np.ndarray:
        if self._x.ndim == 1:
            return self._x[columns]
        mono = self._x[:, columns].sum(axis=0, dtype=np.float32)
        mono /= 32768
        if self._x.shape[0] > 1:
            mono /= np.float32(self._x.shape[0])
        return mono

    def take(self, idx: np.ndarray) -> np.ndarray:
        values = self._mono(np.minimum(idx, self.length - 1)).astype(np.float64)
        values[idx >= self.length] = 0.0
        return values

    def stats(self, block: int = 1 << 20) -> tuple[float, float, float]:
        """Sum (float64), minimum and maximum of the samples, one block at a time."""
        total, low, high = 0.0, math.inf, -math.inf
        for start in range(0, self.length, block):
            values = self._mono(slice(start, start + block)).astype(np.float64)
            total += float(values.sum())
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        return total, low, high

    def mono(self) -> np.ndarray:
        return self._mono(slice(None)).astype(np.float64)


def _sinc_interpolate(rows: np.ndarray, lanes: np.ndarray, x: np.ndarray, depth: int) -> np.ndarray:
    """Praat's ``NUM_interpolate_sinc`` of ``rows[lanes]`` at 1-based positions ``x``: a sinc with a
    raised-cosine window ``depth`` taps to each side (fewer where the row ends sooner).

    Args:
        rows: ``[R,S]``; lanes: ``[L]`` row of each lane; x: ``[L]`` positions in ``(1, S)``.
    """
    size = rows.shape[1]
    midleft = np.floor(x)
    mid = midleft.astype(np.int64)
    taps = np.minimum(np.minimum(depth, mid), size - mid)
    out = np.empty_like(x)
    on_grid = x == midleft
    out[on_grid] = rows[lanes[on_grid], mid[on_grid] - 1]
    for d in np.unique(taps[~on_grid]):
        sel = np.flatnonzero((taps == d) & ~on_grid)
        out[sel] = _sinc_at(rows, lanes[sel], x[sel], midleft[sel], mid[sel], int(d))
    return out


def _sinc_at(rows: np.ndarray, lanes: np.ndarray, x: np.ndarray, midleft: np.ndarray, mid: np.ndarray,
             d: int) -> np.ndarray:
    # taps at 1-based positions mid-d+1 .. mid (left) and mid+1 .. mid+d (right): one contiguous window
    window = np.lib.stride_tricks.sliding_window_view(rows, 2 * d, axis=1)[lanes, mid - d]
    j = np.concatenate([np.arange(d - 1, -1, -1), np.arange(d)]).astype(np.float64)
    alternating = np.where(j % 2 == 0, 0.5, -0.5)
    is_left = np.arange(2 * d) < d
    frac = np.where(is_left, (x - midleft)[:, None], (midleft + 1 - x)[:, None])
    span = np.where(is_left, (x - (mid + 1 - d) + 1)[:, None], ((mid + d) - x + 1)[:, None])
    a = math.pi * frac + j * math.pi
    weights = np.sin(math.pi * frac) * alternating / a * (1.0 + np.cos(a / span))
    return (window * weights).sum(1)


def _sinc_interpolate_lanes(rows: np.ndarray, lanes: np.ndarray, x: np.ndarray, depth: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for d in np.unique(depth):
        sel = np.flatnonzero(depth == d)
        out[sel] = _sinc_interpolate(rows, lanes[sel], x[sel], int(d))
    return out


def _brent_maximize(rows: np.ndarray, row_of: np.ndarray, centre: np.ndarray, depth: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per lane, Brent's minimisation of ``-sinc(rows[row_of[l]], x)`` on ``[centre-1, centre+1]`` (Praat's
    ``NUMimproveMaximum``). Returns the refined 1-based position and the interpolated maximum."""

    def f(x: np.ndarray, active: np.ndarray) -> np.ndarray:
        return -_sinc_interpolate_lanes(rows, row_of[active], x, depth[active])

    everyone = np.arange(centre.shape[0])
    a, b = centre - 1.0, centre + 1.0
    v = a + _GOLDEN * (b - a)
    fv = f(v, everyone)
    x, w, fx, fw = v.copy(), v.copy(), fv.copy(), fv.copy()
    active = everyone
    for _ in range(_BRENT_MAX_ITER):
        xa, aa, ba = x[active], a[active], b[active]
        middle = (aa + ba) / 2.0
        tol_act = _SQRT_EPS * np.abs(xa) + _BRENT_TOL / 3.0
        going = np.abs(xa - middle) + (ba - aa) / 2.0 > 2.0 * tol_act
        active, xa, aa, ba, middle, tol_act = (arr[going] for arr in (active, xa, aa, ba, middle, tol_act))
        if active.size == 0:
            break
        wa, va, fxa, fwa, fva = w[active], v[active], fx[active], fw[active], fv[active]
        step = _GOLDEN * np.where(xa < middle, ba - xa, aa - xa)
        t = (xa - wa) * (fxa - fva)
        q = (xa - va) * (fxa - fwa)
        p = (xa - va) * q - (xa - wa) * t
        q = 2.0 * (q - t)
        p = np.where(q > 0.0, -p, p)
        q = np.abs(q)
        parabolic = ((np.abs(xa - wa) >= tol_act) & (np.abs(p) < np.abs(step * q))
                     & (p > q * (aa - xa + 2.0 * tol_act)) & (p < q * (ba - xa - 2.0 * tol_act)))
        step = np.where(parabolic, p / np.where(parabolic, q, 1.0), step)
        step = np.where(np.abs(step) < tol_act, np.where(step > 0.0, tol_act, -tol_act), step)
        xt = xa + step
        ft = f(xt, active)
        better = ft <= fxa
        left = xt < xa
        # better: the bracket shrinks towards t and (v, w, x) shift; otherwise t becomes a bracket end
        a[active] = np.where(better, np.where(left, aa, xa), np.where(left, xt, aa))
        b[active] = np.where(better, np.where(left, xa, ba), np.where(left, ba, xt))
        as_w = ~better & ((ft <= fwa) | (wa == xa))
        as_v = ~better & ~as_w & ((ft <= fva) | (va == xa) | (va == wa))
        v[active] = np.where(better | as_w, wa, np.where(as_v, xt, va))
        fv[active] = np.where(better | as_w, fwa, np.where(as_v, ft, fva))
        w[active] = np.where(better, xa, np.where(as_w, xt, wa))
        fw[active] = np.where(better, fxa, np.where(as_w, ft, fwa))
        x[active] = np.where(better, xt, xa)
        fx[active] = np.where(better, ft, fxa)
    return x, -fx


def _octave_weighted(strength: np.ndarray, frequency: np.ndarray, s: PraatPitchSettings) -> np.ndarray:
    return strength - s.octave_cost * (np.log(s.pitch_floor / frequency) * _LOG2E)


def _place_candidates(strength: np.ndarray, frequency: np.ndarray, s: PraatPitchSettings) -> np.ndarray:
    """Praat's slot filling for a frame with more maxima (in lag order) than free slots: once the slots are
    full, a maximum replaces the weakest octave-cost-weighted candidate if it is stronger. Returns each
    maximum's 0-based voiced slot, or -1 for maxima that end up without one."""
    weighted = _octave_weighted(strength, frequency, s)
    occupant = []   # index of the maximum in each slot
    for i in range(strength.shape[0]):
        if len(occupant) < s.max_candidates - 1:
            occupant.append(i)
            continue
        weakest, place = 2.0, -1
        for slot, held in enumerate(occupant):
            if weighted[held] < weakest:
                weakest, place = weighted[held], slot
        if weighted[i] > weakest:
            occupant[place] = i
    places = np.full(strength.shape[0], -1)
    places[occupant] = np.arange(len(occupant))
    return places


def _analyse_frames(signal: _Samples, plan: _Plan, s: PraatPitchSettings, frames: np.ndarray,
                    window: np.ndarray, window_ac: np.ndarray, global_peak: float) -> _Candidates:
    """Candidates of ``frames`` (one block): local autocorrelation, peak picking, sinc/Brent refinement."""
    n = frames.shape[0]
    left = plan.left_samples(frames)
    span = np.arange(2 * plan.nsamp_period)
    local_mean = signal.take((left + 1 - plan.nsamp_period)[:, None] + span).sum(1) / (2 * plan.nsamp_period)
    frame = (signal.take((left + 1 - plan.halfnsamp_window)[:, None] + np.arange(plan.nsamp_window))
             - local_mean[:, None]) * window
    lo = max(0, plan.halfnsamp_window - plan.halfnsamp_period)
    hi = min(plan.nsamp_window, plan.halfnsamp_window + plan.halfnsamp_period)
    local_peak = np.abs(frame[:, lo:hi]).max(1)
    intensity = np.where(local_peak > global_peak, 1.0, local_peak / global_peak)

    ac = np.fft.irfft(np.abs(np.fft.rfft(frame, plan.nsamp_fft, axis=1)) ** 2, plan.nsamp_fft, axis=1)
    bix = plan.brent_ixmax
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ac[:, 1:bix + 1] / (ac[:, :1] * window_ac[1:bix + 1])
    r = np.concatenate([np.ones((n, 1)), r], axis=1)               # r[:, lag], lag 0..bix
    rows = np.concatenate([r[:, :0:-1], r], axis=1)                # lags -bix..bix; 1-based position lag+bix+1

    last = min(plan.maximum_lag, bix)                              # peaks at lags 2 .. last-1
    centre, before, after = r[:, 2:last], r[:, 1:last - 1], r[:, 3:last + 1]
    is_peak = (centre > 0.5 * s.voicing_threshold) & (centre > before) & (centre >= after)
    is_peak &= (local_peak > 0.0)[:, None]
    frame_idx, peak_col = np.nonzero(is_peak)
    lag = peak_col + 2
    dr = 0.5 * (after[frame_idx, peak_col] - before[frame_idx, peak_col])
    d2r = 2.0 * centre[frame_idx, peak_col] - before[frame_idx, peak_col] - after[frame_idx, peak_col]
    first_frequency = 1.0 / plan.dx / (lag + dr / d2r)

    counts = np.bincount(frame_idx, minlength=n)
    slot = np.arange(frame_idx.shape[0]) - (np.cumsum(counts) - counts)[frame_idx] + 1
    keep = np.ones(lag.shape[0], dtype=bool)
    for f in np.flatnonzero(counts > s.max_candidates - 1):
        # rare: more maxima than slots; Praat ranks them with first-pass (depth-30) sinc strengths
        sel = np.flatnonzero(frame_idx == f)
        strength = _sinc_interpolate(rows, np.full(sel.size, f), 1.0 / plan.dx / first_frequency[sel] + (bix + 1),
                                     _FIRST_PASS_DEPTH)
        strength = np.where(strength > 1.0, 1.0 / strength, strength)
        places = _place_candidates(strength, first_frequency[sel], s)
        keep[sel] = places >= 0
        slot[sel] = places + 1
    frame_idx, lag, first_frequency, slot = frame_idx[keep], lag[keep], first_frequency[keep], slot[keep]

    depth = np.where(first_frequency > 0.3 / plan.dx, _REFINE_DEPTH_HIGH, _REFINE_DEPTH)
    position, peak = _brent_maximize(rows, frame_idx, (lag + bix + 1).astype(np.float64), depth)
    frequency = 1.0 / plan.dx / (position - bix - 1)
    strength = np.where(peak > 1.0, 1.0 / peak, peak)

    m = s.max_candidates
    freq_out = np.zeros((n, m))
    strength_out = np.zeros((n, m))
    freq_out[frame_idx, slot] = frequency
    strength_out[frame_idx, slot] = strength
    return _Candidates(freq_out, strength_out, np.minimum(counts, m - 1) + 1, intensity)


def _path_finder(c: _Candidates, s: PraatPitchSettings, ceiling: float) -> np.ndarray:
    """Praat's Viterbi through the candidates (octave-jump and voicing-transition costs); selected Hz."""
    num_frames, m = c.frequency.shape
    correction = 0.01 / s.time_step
    jump_cost = s.octave_jump_cost * correction
    vu_cost = s.voiced_unvoiced_cost * correction
    exists = np.arange(m)[None, :] < c.count[:, None]
    voiced = exists & (c.frequency > 0.0) & (c.frequency < ceiling)
    unvoiced_strength = 2 - c.intensity / (s.silence_threshold / (1 + s.voicing_threshold)) \
        if s.silence_threshold > 0 else np.zeros(num_frames)
    unvoiced_strength = s.voicing_threshold + np.maximum(unvoiced_strength, 0.0)
    with np.errstate(divide="ignore"):
        voiced_delta = c.strength - s.octave_cost * (np.log(ceiling / c.frequency) * _LOG2E)
    delta = np.where(voiced, voiced_delta, unvoiced_strength[:, None])
    delta = np.where(exists, delta, -np.inf)
    psi = np.zeros((num_frames, m), dtype=np.int64)
    previous = delta[0]
    for f in range(1, num_frames):
        cur_v, prev_v = voiced[f], voiced[f - 1]
        # |log2(f1/f2)| as Praat computes it: log of the ratio, times log2(e)
        ratio = np.where(prev_v[None, :] & cur_v[:, None],
                         c.frequency[f - 1][None, :] / np.where(cur_v, c.frequency[f], 1.0)[:, None], 1.0)
        cost = np.where(cur_v[:, None] != prev_v[None, :], vu_cost,
                        np.where(cur_v[:, None], jump_cost * np.abs(np.log(ratio) * _LOG2E), 0.0))
        value = (previous[None, :] - cost) + delta[f][:, None]
        psi[f] = value.argmax(1)
        previous = np.where(exists[f], value.max(1), -np.inf)
    place = int(previous.argmax())
    selected = np.empty(num_frames)
    for f in range(num_frames - 1, -1, -1):
        selected[f] = c.frequency[f, place]
        place = psi[f, place]
    return selected


def praat_pitch_ac(signal: np.ndarray, sample_rate: float = SAMPLE_RATE,
                   settings: PraatPitchSettings = PraatPitchSettings(), *, pad_to: int | None = None,
                   block_frames: int = 512) -> np.ndarray:
    """Praat's ``Sound: To Pitch (ac)`` selected path for a mono signal, frame by frame in bounded memory.

    Args:
        signal: ``[N]`` float samples (one channel), read as float64 like Praat does; or 16-bit PCM ``[C,N]``,
            analysed as its channel mean (``Audio16k.pitch_mono``) without making that copy.
        pad_to: analyse the signal as if zero-padded to this many samples (no copy is made).
        block_frames: frames analysed together; bounds the working memory.
    Returns:
        ``[num_frames]`` float64 Hz, 0 = unvoiced; frame i is centred at ``t1 + i·time_step`` with Praat's
        symmetric placement (``t1`` from the padded duration).
    """
    signal = _Samples(signal)
    length = signal.length
    total = max(length, pad_to or 0)
    plan = _Plan.make(total, sample_rate, settings)
    if plan is None:
        return np.zeros(0)
    if length:
        total_sum, low, high = signal.stats()
        mean = total_sum / total
        peak = max(high - mean, mean - low)
        global_peak = max(peak, abs(mean)) if total > length else peak
    else:
        global_peak = 0.0
    if global_peak == 0.0:
        return np.zeros(plan.num_frames)
    window = 0.5 - 0.5 * np.cos(np.arange(1, plan.nsamp_window + 1) * 2 * math.pi / (plan.nsamp_window + 1))
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, plan.nsamp_fft)) ** 2, plan.nsamp_fft)
    window_ac = window_ac / window_ac[0]
    blocks = []
    for start in range(0, plan.num_frames, block_frames):
        frames = np.arange(start, min(start + block_frames, plan.num_frames))
        blocks.append(_analyse_frames(signal, plan, settings, frames, window, window_ac, global_peak))
    candidates = _Candidates(*(np.concatenate([getattr(b, k) for b in blocks])
                               for k in ("frequency", "strength", "count", "intensity")))
    return _path_finder(candidates, settings, plan.ceiling)


def _parselmouth_pitch(signal: np.ndarray, pad_to: int, settings: PraatPitchSettings) -> np.ndarray:
    try:
        import parselmouth
    except ImportError:
        raise R3DPError("f0 method 'parselmouth' needs the praat-parselmouth package (GPL-3): "
                        "pip install praat-parselmouth — or use the built-in method 'praat', which "
                        "re-implements the same analysis.") from None
    padded = np.zeros(pad_to, dtype=np.float64)
    padded[:signal.shape[-1]] = _Samples(signal).mono()
    pitch = parselmouth.Sound(padded, SAMPLE_RATE).to_pitch_ac(
        time_step=settings.time_step, pitch_floor=settings.pitch_floor,
        max_number_of_candidates=settings.max_candidates,
        silence_threshold=settings.silence_threshold, voicing_threshold=settings.voicing_threshold,
        octave_cost=settings.octave_cost, octave_jump_cost=settings.octave_jump_cost,
        voiced_unvoiced_cost=settings.voiced_unvoiced_cost, pitch_ceiling=settings.pitch_ceiling)
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def official_f0(samples: np.ndarray, method: str = "praat", settings: PraatPitchSettings = PraatPitchSettings()
                ) -> np.ndarray:
    """f0 of a 16 kHz mono clip exactly as the official ``extract_mel_f0`` frames it.

    The wav is zero-padded on the right to ``(N // 320 + 1) · 320`` samples before the pitch analysis; the
    result is aligned to the mel-frame count ``1 + (N - 512) // 320`` (repeating the last value if short,
    truncating if long). Callers then cut or zero-pad it to the HuBERT length (``align_frames``).

    Args:
        samples: ``[N]`` float32 samples in [-1,1] at 16 kHz (the channel mean, as ``librosa.load`` gives it),
            or the clip's 16-bit PCM ``[C,N]`` (``Audio16k.pcm``), whose channel mean is read block by block.
        method: ``'praat'`` (built-in re-implementation) or ``'parselmouth'`` (the official library).
    Returns:
        ``[T_mel]`` float32 Hz, 0 = unvoiced.
    """
    if method not in F0_METHODS:
        raise R3DPError(f"Unknown f0 method {method!r}; choose one of {', '.join(F0_METHODS)}.")
    n = samples.shape[-1]
    padded = (n // HOP + 1) * HOP
    if method == "parselmouth":
        f0 = _parselmouth_pitch(samples, padded, settings)
    else:
        f0 = praat_pitch_ac(samples, SAMPLE_RATE, settings, pad_to=padded)
    num_mel = max(0, 1 + (n - MEL_FFT) // HOP)
    if 0 < f0.shape[0] < num_mel:
        f0 = np.concatenate([f0, np.full(num_mel - f0.shape[0], f0[-1])])
    return align_frames(f0.astype(np.float32), num_mel)


def align_frames(values: np.ndarray, num_frames: int) -> np.ndarray:
    """Cut ``values`` (first axis) to ``num_frames`` or zero-pad it at the end, as the official batch does."""
    if values.shape[0] >= num_frames:
        return values[:num_frames]
    pad = np.zeros((num_frames - values.shape[0],) + values.shape[1:], dtype=values.dtype)
    return np.concatenate([values, pad])

