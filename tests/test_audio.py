"""Audio front end: 16 kHz conversion, HuBERT framing with a tiny random HuBERT, Praat f0, blink schedule,
and the bounded-memory ``audio_to_motion`` chain."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from r3dp_core import model_files
from r3dp_core.audio.hubert import (
    clip_bounds,
    find_hubert,
    hubert_features,
    iter_hubert_clips,
    load_hubert,
    num_frames,
    padded_num_frames,
)
from r3dp_core.audio.io import load_audio
from r3dp_core.audio.motion import audio_to_motion
from r3dp_core.audio.pitch import align_frames, official_f0, praat_pitch_ac
from r3dp_core.checkpoint import load_into
from r3dp_core.errors import InputError, ModelFileError, R3DPError
from r3dp_core.geometry.blink import blink_schedule
from r3dp_core.models.a2m_vae import A2MConfig, AudioToMotionVAE

DATA = Path(__file__).parent / "data"
# sha256 of `ffmpeg -i speech_en_44k_stereo.wav -f wav -ar 16000` (FFmpeg 9.0.2) as int16 [C,N] samples
FFMPEG_44K_STEREO_SHA256 = "86a7f4bd19ee1d22a0af238fc38d494622deb5a64bd2e64a6463f6a0051c2830"


def tiny_hubert_config(hidden_size: int = 1024):
    from transformers import HubertConfig

    # official framing (conv kernels/strides) and width; one small layer so 60 s run in well under a second
    return HubertConfig(hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                        conv_dim=(16,) * 7, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=16,
                        do_stable_layer_norm=True, feat_extract_norm="layer")


@pytest.fixture(scope="module")
def tiny_hubert():
    from transformers import HubertModel

    torch.manual_seed(0)
    return HubertModel(tiny_hubert_config()).eval()


@pytest.fixture(scope="module")
def a2m(synth_state_dict) -> AudioToMotionVAE:
    weights = synth_state_dict("audio2secc_vae")
    model = AudioToMotionVAE(A2MConfig.from_state_dict(weights))
    load_into(model, weights)
    return model.eval()


def voice(duration: float, rate: int, channels: int, f0: float = 150.0) -> torch.Tensor:
    """``[1,C,T]`` float32: a harmonic 'voice' at ``f0`` on channel 0, other channels a quieter 300 Hz tone."""
    t = torch.arange(round(duration * rate), dtype=torch.float64) / rate
    envelope = 0.6 + 0.4 * torch.sin(2 * torch.pi * 0.7 * t)
    main = sum(torch.sin(2 * torch.pi * k * f0 * t + k) / k for k in range(1, 6)) * 0.25 * envelope
    chans = [main] + [0.2 * torch.sin(2 * torch.pi * 300 * t + c) for c in range(1, channels)]
    return torch.stack(chans)[None].float()


def as_audio(waveform: torch.Tensor, rate: int) -> dict:
    return {"waveform": waveform, "sample_rate": rate}


# ---------------------------------------------------------------------------------------------- 16 kHz conversion

def test_16k_wav_is_read_unchanged(shared_dir):
    path = shared_dir / "testdata" / "speech_en_16k.wav"
    clip = load_audio(path)
    raw, rate = sf.read(path, dtype="int16", always_2d=True)
    assert rate == 16000 and clip.source_rate == 16000
    assert np.array_equal(clip.pcm, raw.T)
    assert clip.duration_s == pytest.approx(9.386, abs=1e-3)


def test_resampling_is_bit_identical_to_the_ffmpeg_step(shared_dir):
    path = shared_dir / "testdata" / "speech_en_44k_stereo.wav"
    clip = load_audio(path)
    assert clip.pcm.shape == (2, 101266) and clip.source_rate == 44100
    assert hashlib.sha256(np.ascontiguousarray(clip.pcm).tobytes()).hexdigest() == FFMPEG_44K_STEREO_SHA256
    # the same samples handed over as a ComfyUI AUDIO dict convert identically
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    from_dict = load_audio(as_audio(torch.from_numpy(samples.T.copy())[None], rate))
    assert np.array_equal(from_dict.pcm, clip.pcm)


@pytest.mark.parametrize("fmt,codec,rate", [("flac", "flac", 44100), ("ogg", "libopus", 48000),
                                            ("mp3", "libmp3lame", 44100)])
def test_compressed_formats_decode(tmp_path, fmt, codec, rate):
    import av

    t = torch.arange(round(1.5 * rate)) / rate
    wave = torch.stack([0.4 * torch.sin(2 * torch.pi * 440 * t), 0.4 * torch.sin(2 * torch.pi * 660 * t)]).numpy()
    path = tmp_path / f"clip.{fmt}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        for start in range(0, wave.shape[1], rate // 10):   # the encoder converts to its sample format itself
            frame = av.AudioFrame.from_ndarray(wave[:, start:start + rate // 10].astype(np.float32),
                                               format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    clip = load_audio(path)
    assert clip.num_channels == 2 and clip.source_rate == rate
    assert abs(clip.num_samples - 24000) <= 1200   # lossy codecs may add up to a frame of padding
    spectrum = np.abs(np.fft.rfft(clip.pcm[:, 2000:18000].astype(np.float64), axis=1))
    assert [int(np.argmax(s)) for s in spectrum] == [440, 660]   # 16000 samples: 1 Hz bins


def test_comfy_audio_dict_conversion():
    wave = torch.tensor([[[0.0, 0.5, -0.5, 1.5, -2.0, 0.25] * 100]])
    clip = load_audio(as_audio(wave, 16000))
    expected = np.clip(np.rint(wave[0].numpy() * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(clip.pcm, expected)       # 16 kHz input: only the 16-bit quantisation (clipped)
    two_d = load_audio(as_audio(wave[0], 16000))
    assert np.array_equal(two_d.pcm, clip.pcm)
    assert load_audio(clip) is clip
    round_trip = load_audio(clip.to_comfy())
    assert np.array_equal(round_trip.pcm, clip.pcm)
    cut = clip.to_comfy(seconds=0.0125)              # 200 samples at 16 kHz: what the video writer muxes
    assert cut["sample_rate"] == 16000 and cut["waveform"].shape == (1, 1, 200)
    assert torch.equal(cut["waveform"][0, 0], torch.from_numpy(clip.pcm[0, :200] / np.float32(32768)))


def test_a_sound_is_the_clip_at_its_own_rate_with_one_16k_view(shared_dir, monkeypatch):
    """A file is decoded once into a ``Sound``: the clip as it is (what is muxed, a ComfyUI AUDIO mapping), and its
    16 kHz view converted on first use and kept: the checks, the speech model, a cut of the clip and natural head
    motion all read that one view."""
    from r3dp_core.audio import io as audio_io
    from r3dp_core.audio.io import Sound, load_sound
    from r3dp_core.pipeline.pose import PoseRecipe, natural_deviation
    from r3dp_core.pipeline.types import Motion

    path = shared_dir / "testdata" / "speech_en_44k_stereo.wav"
    raw, rate = sf.read(path, dtype="int16", always_2d=True)
    sound = load_sound(path)
    assert sound.sample_rate == rate == 44100 and sound.num_channels == 2 and sound.label == str(path)
    assert np.array_equal(sound.samples, raw.T) and sound.duration_s == raw.shape[0] / rate
    assert load_sound(sound) is sound and set(sound) == {"waveform", "sample_rate"} and sound["sample_rate"] == rate
    assert torch.equal(sound["waveform"][0], torch.from_numpy(raw.T.astype(np.float32) / 32767))  # as Load Audio
    converted = []
    convert = audio_io._convert_to_16k
    monkeypatch.setattr(audio_io, "_convert_to_16k", lambda clip: converted.append(clip) or convert(clip))
    view = load_audio(sound)
    assert load_audio(sound) is view and sound.at_16k() is view and converted == [sound]
    assert hashlib.sha256(np.ascontiguousarray(view.pcm).tobytes()).hexdigest() == FFMPEG_44K_STEREO_SHA256
    part = sound.cut(0.5)  # the clip's first half second at its own rate; its view is the whole view's start
    assert part.num_samples == 22050 and np.array_equal(part.samples, raw[:22050].T)
    assert np.array_equal(part.at_16k().pcm, view.pcm[:, :8000]) and len(converted) == 1
    assert np.array_equal(part.to_comfy()["waveform"], sound.to_comfy(0.5)["waveform"])
    motion = Motion(exp=torch.zeros(50, 64), audio=part)
    assert float(natural_deviation(PoseRecipe(mode="natural"), motion).abs().max()) > 0
    assert len(converted) == 1  # natural head motion read the kept view
    # an AUDIO dict given to a Motion becomes a Sound (the same samples, not a copy)
    waveform = torch.rand(1, 2, 800)
    given = Motion(exp=torch.zeros(2, 64), audio={"waveform": waveform, "sample_rate": 8000}).audio
    assert isinstance(given, Sound) and given.sample_rate == 8000
    assert given["waveform"].data_ptr() == waveform.data_ptr()


def test_a_file_whose_stream_changes_midway_is_refused(tmp_path):
    """Two ADTS AAC streams back to back, mono then stereo: one paragraph naming the file (Load Audio's decoder
    too, which is the same one)."""
    import av

    from r3dp_core.audio.io import decode_audio_file

    parts = []
    for layout in ("mono", "stereo"):
        path = tmp_path / f"{layout}.aac"
        with av.open(str(path), "w", format="adts") as out:
            stream = out.add_stream("aac", rate=16000, layout=layout)
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=16000,
                                          frame_size=stream.codec_context.frame_size)
            frame = av.AudioFrame.from_ndarray(voice(1.0, 16000, 2 if layout == "stereo" else 1)[0].numpy(),
                                               format="fltp", layout=layout)
            frame.sample_rate = 16000
            for block in resampler.resample(frame) + resampler.resample(None):
                for packet in stream.encode(block):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        parts.append(path.read_bytes())
    joined = tmp_path / "joined.aac"
    joined.write_bytes(b"".join(parts))
    for read in (load_audio, decode_audio_file):
        with pytest.raises(InputError, match="joined.aac could not be decoded as audio .*change midway"):
            read(joined)


def test_channel_readings_match_the_official_readers():
    clip = load_audio(as_audio(voice(0.5, 44100, 3), 44100))
    assert clip.num_channels == 3
    assert np.array_equal(clip.hubert_channel(), clip.pcm[0].astype(np.float32) / 32768)   # soundfile, channel 0
    librosa_mono = np.mean(clip.pcm.astype(np.float32) / 32768, axis=0)                   # librosa.load(mono=True)
    assert np.array_equal(clip.pitch_mono(), librosa_mono)
    # the f0 step reads that mean from the PCM block by block instead of from a full copy
    assert np.array_equal(official_f0(clip.pcm), official_f0(librosa_mono))


def test_unusable_audio_gives_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(InputError, match="junk.wav"):
        load_audio(junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="notes.txt"):
        load_audio(text)
    with pytest.raises(InputError, match="empty"):
        load_audio(as_audio(torch.zeros(1, 1, 0), 16000))
    nan = voice(0.1, 16000, 1)
    nan[0, 0, 10] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        load_audio(as_audio(nan, 16000))
    with pytest.raises(InputError, match="batch of 2"):
        load_audio(as_audio(torch.zeros(2, 1, 1000), 16000))
    with pytest.raises(InputError, match="sample_rate"):
        load_audio(as_audio(torch.zeros(1, 1, 1000), 0))
    with pytest.raises(InputError, match="at least 25 ms"):
        load_audio(as_audio(voice(0.01, 16000, 1), 16000))
    with pytest.raises(InputError, match="file path or a ComfyUI AUDIO"):
        load_audio(42)


# ------------------------------------------------------------------------------------------------- HuBERT framing

def test_official_hubert_clip_bounds():
    assert clip_bounds(960_000) == [(0, 320_080), (320_000, 640_080), (640_000, 960_000)]
    assert clip_bounds(320_079) == [(0, 320_079)]
    assert clip_bounds(320_399) == [(0, 320_080)]                 # a 399-sample remainder holds no frame
    assert clip_bounds(320_400) == [(0, 320_080), (320_000, 320_400)]
    for n in (400, 719, 3_200, 320_000, 320_079, 320_080, 320_399, 320_400, 655_555, 960_000, 1_000_001):
        frames = sum((end - start - 400) // 320 + 1 for start, end in clip_bounds(n))
        assert frames == num_frames(n) == (n - 80) // 320
    assert [padded_num_frames(t) for t in (1, 8, 9, 468)] == [8, 8, 16, 472]


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("duration", [0.2, 9.0, 60.0])
def test_feature_path_frame_counts(tiny_hubert, duration, rate, channels):
    clip = load_audio(as_audio(voice(duration, rate, channels), rate))
    n = clip.num_samples
    assert clip.num_channels == channels and abs(n - duration * 16000) <= 1
    t50 = (n - 80) // 320
    t50p = -(-t50 // 8) * 8
    feats = hubert_features(tiny_hubert, clip.hubert_channel())
    assert feats.shape == (t50p, 1024) and feats.dtype == torch.float32
    assert feats[t50:].abs().max() == 0 if t50p > t50 else True
    assert (feats[:t50].abs().amax(1) > 0).all()
    f0 = official_f0(clip.pitch_mono())
    assert f0.shape == (1 + (n - 512) // 320,)
    voiced = f0[f0 > 0]
    assert voiced.size > 0.8 * f0.size and np.abs(voiced - 150).max() < 1.0
    assert align_frames(f0, t50p).shape == (t50p,)
    assert padded_num_frames(num_frames(n)) == t50p     # the motion has t50p / 2 frames at 25 fps


def test_long_audio_runs_in_the_official_clips(tiny_hubert):
    """Frame 1000 starts a new 20 s clip: attention never sees across the boundary."""
    clip = load_audio(as_audio(voice(25.0, 16000, 1), 16000))
    channel = clip.hubert_channel()
    feats = hubert_features(tiny_hubert, channel)
    norm = (channel - channel.mean(dtype=np.float64)) / np.sqrt(channel.var(dtype=np.float64) + 1e-7)
    with torch.inference_mode():
        for (start, end), first in zip(clip_bounds(clip.num_samples), (0, 1000)):
            direct = tiny_hubert(torch.from_numpy(norm[start:end].astype(np.float32))[None]).last_hidden_state[0]
            assert torch.allclose(feats[first:first + direct.shape[0]], direct, atol=2e-4)
    streamed = torch.cat(list(iter_hubert_clips(tiny_hubert, clip.pcm[0])))
    assert torch.equal(streamed, feats[:streamed.shape[0]])


def test_time_alignment_of_samples_and_f0_frames():
    rate = 48000
    t = torch.arange(4 * rate) / rate
    wave = torch.where((t >= 2.0) & (t < 3.0), 0.5 * torch.sin(2 * torch.pi * 200 * t), torch.zeros(()))
    wave[round(1.2345 * rate)] = 0.9      # a click
    clip = load_audio(as_audio(wave[None, None], rate))
    pcm = clip.pcm[0].astype(np.float64)
    assert abs(int(np.argmax(pcm[: 30000])) - round(1.2345 * 16000)) <= 1
    f0 = official_f0(clip.pitch_mono())
    voiced = np.flatnonzero(f0 > 0)
    # f0 frame i is centred at 0.02·(i+1) s, so the tone [2 s, 3 s) covers frames 99..148
    assert voiced.min() in range(97, 101) and voiced.max() in range(147, 151)
    assert np.all(np.abs(f0[101:147] - 200) < 0.05)


# ---------------------------------------------------------------------------------------------------- f0 (Praat)

def _hard_signal() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("make_f0_reference", DATA / "make_f0_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.hard_signal()


def test_praat_port_reproduces_parselmouth(shared_dir):
    """Reference: the official f0 (Praat 6.1.38 through parselmouth 0.4.7), recorded by data/make_f0_reference.py."""
    ref = json.loads((DATA / "f0_reference.json").read_text())
    signals = {name: load_audio(shared_dir / "testdata" / name).pitch_mono() for name in ref["clips"]
               if name.endswith(".wav")}
    signals["hard_signal"] = _hard_signal()
    for name, mono in signals.items():
        expected = np.array(ref["clips"][name])
        ours = official_f0(mono, method="praat").astype(np.float64)
        assert ours.shape == expected.shape, name
        assert np.array_equal(ours > 0, expected > 0), name
        assert np.abs(ours - expected).max() < 1e-3, name


def test_praat_analysis_basics():
    sr = 16000
    t = np.arange(sr) / sr
    tone = praat_pitch_ac((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    assert tone.shape == (49,) and np.abs(tone - 200).max() < 0.01
    for n in (600, 1000, 16000, 16321):
        assert praat_pitch_ac(np.zeros(n, np.float32)).shape == (int((n / sr - 0.0375) / 0.02) + 1,)
    assert praat_pitch_ac(np.zeros(500, np.float32)).shape == (0,)       # shorter than one window
    noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    assert (praat_pitch_ac(noise) == 0).mean() > 0.9
    # implicit zero padding equals explicit padding
    padded = np.concatenate([tone.astype(np.float32), np.zeros(500, np.float32)])
    assert np.array_equal(praat_pitch_ac(tone.astype(np.float32), pad_to=549), praat_pitch_ac(padded))


def test_parselmouth_method_explains_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "parselmouth", None)
    with pytest.raises(R3DPError, match="pip install praat-parselmouth"):
        official_f0(np.zeros(16000, np.float32), method="parselmouth")
    with pytest.raises(R3DPError, match="praat, parselmouth"):
        official_f0(np.zeros(16000, np.float32), method="crepe")


# --------------------------------------------------------------------------------------------- HuBERT files

def test_hubert_is_found_in_the_models_folder_and_the_hf_cache(tmp_path, monkeypatch, tiny_hubert):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    models = tmp_path / "models"
    with pytest.raises(ModelFileError) as err:
        find_hubert(models)
    message = str(err.value)
    assert "facebook/hubert-large-ls960-ft" in message
    assert str(models / "hubert" / "hubert-large-ls960-ft") in message and "hf download" in message

    snapshot = tmp_path / "hf" / "models--facebook--hubert-large-ls960-ft" / "snapshots" / model_files.HUBERT_REVISION
    tiny_hubert.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(model_files.HUBERT_REVISION)
    assert find_hubert(models) == snapshot

    # the real snapshot is a HubertForCTC checkpoint: the encoder loads without its CTC head
    from transformers import HubertForCTC

    local = models / "hubert" / "hubert-large-ls960-ft"
    ctc = HubertForCTC(tiny_hubert_config())
    ctc.hubert.load_state_dict(tiny_hubert.state_dict())
    ctc.save_pretrained(local)
    assert find_hubert(models) == local
    loaded = load_hubert(models)
    assert not loaded.training and type(loaded).__name__ == "HubertModel"
    x = torch.randn(1, 4000)
    with torch.inference_mode():
        assert torch.equal(loaded(x).last_hidden_state, tiny_hubert(x).last_hidden_state)


def test_hubert_of_the_wrong_size_is_refused(tmp_path):
    from transformers import HubertModel

    HubertModel(tiny_hubert_config(hidden_size=64)).save_pretrained(tmp_path / "hubert" / "hubert-large-ls960-ft")
    with pytest.raises(ModelFileError, match="64-d features"):
        load_hubert(tmp_path)


# ----------------------------------------------------------------------------------------------------- blinks

def test_blink_schedule_is_the_official_one():
    seed = 42
    rng = random.Random(seed)
    lengths = [rng.randint(8, 12) for _ in range(3)]
    schedule = blink_schedule(300, seed=seed)
    assert schedule.events == tuple(zip((0, 125, 250), lengths))
    for start, length in schedule.events:
        k = torch.arange(length, dtype=torch.float64)
        expected = (-4 * k ** 2 / length ** 2 + 4 * k / length).float()
        assert torch.equal(schedule.closure[start:start + length], expected)
        assert schedule.edited[start:start + length].all() and not schedule.edited[start + length]
    assert schedule.closure[0] == 0 and schedule.edited[0]          # blinks start at frame 0, edited at p = 0
    assert schedule.edited.sum() == sum(lengths)
    assert schedule.closure.max() <= 1 and schedule.closure.min() >= 0


def test_blink_schedule_controls():
    short = blink_schedule(130, seed=1)
    assert not short.edited[129] and short.events[1][0] == 125
    assert short.edited[125:129].all()                     # the last frame is never edited
    off = blink_schedule(300, enabled=False, seed=1)
    assert off.events == () and off.closure.abs().max() == 0 and not off.edited.any()
    half = blink_schedule(300, amplitude=0.5, seed=1)
    assert torch.allclose(half.closure, 0.5 * blink_schedule(300, seed=1).closure)
    dense = blink_schedule(100, interval=25, min_frames=10, max_frames=10, seed=0)
    assert [s for s, _ in dense.events] == [0, 25, 50, 75] and dense.edited.sum() == 40
    assert blink_schedule(0, seed=0).closure.shape == (0,)
    with pytest.raises(InputError, match="interval"):
        blink_schedule(10, interval=0)
    with pytest.raises(InputError, match="amplitude"):
        blink_schedule(10, amplitude=2.0)


# --------------------------------------------------------------------------------------------- the whole chain

def test_audio_to_motion_equals_the_whole_sequence_chain(tiny_hubert, a2m):
    """25 s (2 HuBERT clips) streamed through short windows equals features + model on the whole clip."""
    audio = as_audio(voice(25.0, 44100, 2), 44100)
    clip = load_audio(audio)
    feats = hubert_features(tiny_hubert, clip.hubert_channel())
    f0 = torch.from_numpy(align_frames(official_f0(clip.pitch_mono()), feats.shape[0]))[None]
    whole = a2m.predict_expression(feats[None], f0, mouth_amp=0.45, temperature=0.2, seed=5, chunk_frames=None)[0]
    seen = []
    streamed = audio_to_motion(audio, a2m, tiny_hubert, seed=5, chunk_frames=256,
                               progress=lambda done, total: seen.append((done, total)))
    assert streamed.shape == whole.shape == (padded_num_frames(num_frames(clip.num_samples)) // 2, 64)
    assert (streamed - whole).abs().max() < 2e-5
    assert seen[-1] == (whole.shape[0], whole.shape[0]) and len(seen) == -(-whole.shape[0] // 256)
