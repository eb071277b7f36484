"""Natural head motion and pose strength (r3dp_core.geometry.natural_pose), pose smoothing through the recipe,
speech energy and speech activity (r3dp_core.audio.energy)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from r3dp_core.audio.energy import speech_activity, speech_energy
from r3dp_core.audio.io import Audio16k, load_audio
from r3dp_core.errors import InputError
from r3dp_core.geometry.camera import camera_to_pose, eg3d_cameras
from r3dp_core.geometry.natural_pose import NaturalMotionLimits, apply_deviation, natural_head_motion, scale_pose

DEG = 180 / math.pi


def _speech_and_pauses(seconds: float, speak: float = 3.0, pause: float = 3.0) -> Audio16k:
    """Syllable-like bursts (4 per second, 220 Hz carrier) for ``speak`` s, then ``pause`` s of silence, repeated."""
    t = np.arange(int(seconds * 16000)) / 16000
    speaking = (t % (speak + pause)) < speak
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    wave = 0.4 * np.sin(2 * np.pi * 220 * t) * syllables * speaking
    return Audio16k(pcm=(wave * 32767).astype(np.int16)[None], source_rate=16000)


def _clip(wave: np.ndarray) -> Audio16k:
    return Audio16k(pcm=(np.clip(wave, -1, 1) * 32767).astype(np.int16)[None], source_rate=16000)


def _voiced_speech(seconds: float, level: float = 0.4, speak: float | None = None, pause: float = 0.0) -> np.ndarray:
    """A speech-like voice: 14 harmonics of an f0 gliding around 140 Hz (intonation), opened and closed at a
    syllable rate of 4 Hz; with ``speak``, ``speak`` s of it then ``pause`` s of silence, repeated."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t) + 0.05 * np.sin(2 * np.pi * 3.1 * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 15))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.7
    wave = level * voice / np.abs(voice).max() * syllables
    return wave * ((t % (speak + pause)) < speak) if speak is not None else wave


def _loud_music(seconds: float, level: float = 0.6, seed: int = 0) -> np.ndarray:
    """Loud, voiceless music: two inharmonic bell-like tones (partials at 1, 2.76, 5.40, 8.93 × 233 and 311 Hz)
    struck every 0.5 s, a drum beat every 0.25 s (a noise burst and a 55 Hz thump) and a noise bed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = np.zeros_like(t)
    for base in (233.0, 311.0):
        for ratio, amplitude in ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)):
            wave += amplitude * np.sin(2 * np.pi * base * ratio * t) * np.exp(-3 * (t % 0.5))
    beat = t % 0.25
    wave += 1.5 * rng.standard_normal(t.size) * np.exp(-30 * beat) + np.sin(2 * np.pi * 55 * beat) * np.exp(-20 * beat)
    wave += 0.2 * rng.standard_normal(t.size)
    return level * wave / np.abs(wave).max()


def test_speech_energy_follows_the_voice_at_any_frame_rate():
    audio = _speech_and_pauses(12.0)
    e25 = speech_energy(audio, 25)
    e50 = speech_energy(audio, 50)
    assert e25.shape == (300,) and e50.shape == (600,)
    assert float(e25.min()) >= 0 and float(e25.max()) <= 1
    t = torch.arange(300) / 25
    speaking = (t % 6) < 3
    inner_pause = ((t % 6) > 3.2) & ((t % 6) < 5.8)
    assert float(e25[speaking].mean()) > 0.4 and float(e25[inner_pause].max()) == 0.0
    assert torch.equal(e50[::2], e25)  # a function of time, sampled at the frames' times
    silent = Audio16k(pcm=np.zeros((1, 16000), np.int16), source_rate=16000)
    assert torch.equal(speech_energy(silent, 25), torch.zeros(25))
    assert speech_energy(audio, 25, num_frames=400)[-50:].abs().max() == 0  # past the clip's end: silence


def test_speech_activity_is_the_voice_not_loud_music_or_noise():
    voice = speech_activity(_clip(_voiced_speech(8.0)), 100)
    music = _clip(_loud_music(8.0))
    noise = _clip(0.5 * np.random.default_rng(0).standard_normal(8 * 16000))
    assert voice.shape == (800,) and float(voice.min()) >= 0 and float(voice.max()) <= 1
    assert float(voice.mean()) > 0.3 and float((voice > 0.5).float().mean()) > 0.3
    for loud in (music, noise):
        # loudness alone would drive the head hard (what raw energy gave); voicing does not
        assert float(speech_energy(loud, 100).mean()) > 0.7
        activity = speech_activity(loud, 100)
        assert float(activity.mean()) < 0.02 and float(activity.quantile(0.99)) < 0.1
    # the voice over the music, with pauses: the voice counts, the music between its sentences does not
    t = torch.arange(1600) / 100
    speaking, pausing = ((t % 4) > 0.3) & ((t % 4) < 1.7), ((t % 4) > 2.3) & ((t % 4) < 3.7)
    mixed = speech_activity(_clip(_voiced_speech(16.0, 0.3, speak=2.0, pause=2.0) + _loud_music(16.0, 0.35)), 100)
    assert float(mixed[speaking].mean()) > 0.3 and float(mixed[pausing].mean()) < 0.03
    assert float(speech_energy(_clip(_loud_music(16.0, 0.35)), 100)[pausing].mean()) > 0.7
    silent = Audio16k(pcm=np.zeros((1, 16000), np.int16), source_rate=16000)
    assert torch.equal(speech_activity(silent, 25), torch.zeros(25))


def test_speech_activity_of_recorded_speech_at_any_frame_rate(shared_dir):
    recorded = load_audio(shared_dir / "testdata" / "speech_en_16k.wav")
    activity = speech_activity(recorded, 100)
    assert float(activity.mean()) > 0.3 and float((activity > 0.5).float().mean()) > 0.3
    assert torch.equal(speech_activity(recorded, 50)[::2], speech_activity(recorded, 25))  # a function of time


def _velocity_and_acceleration(deviation: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
    angles = deviation[:, :3].double() * DEG
    velocity = torch.diff(angles, dim=0) * fps
    return velocity, torch.diff(velocity, dim=0) * fps


def test_natural_motion_is_bounded_smooth_and_seeded():
    energy = speech_energy(_speech_and_pauses(20.0), 25)
    limits = NaturalMotionLimits()
    for seed in range(4):
        for strength in (1.0, 0.5, 2.0):
            motion = natural_head_motion(500, 25, energy, seed=seed, strength=strength)
            assert motion.shape == (500, 6) and motion.dtype == torch.float32
            peak = motion.abs().amax(0)
            # a frontal base: the total is the motion; strength up to 1 scales it, above 1 the bounds stay put
            share = min(strength, 1.0)
            assert peak[0] * DEG < share * limits.pitch_degrees
            assert peak[1] * DEG < share * limits.yaw_degrees
            assert peak[2] * DEG < share * limits.roll_degrees
            assert float(peak[3:5].max()) < share * limits.sway and float(peak[5]) == 0.0
        velocity, acceleration = _velocity_and_acceleration(natural_head_motion(500, 25, energy, seed=seed), 25)
        # a calm head: well under 60°/s and 400°/s² on every axis (white jitter of the same size would give
        # thousands); and it does move (not frozen)
        assert float(velocity.abs().max()) < 60 and float(acceleration.abs().max()) < 400
        assert float(natural_head_motion(500, 25, energy, seed=seed)[:, 1].std()) * DEG > 0.5
    same = natural_head_motion(300, 25, energy[:300], seed=7)
    assert torch.equal(same, natural_head_motion(300, 25, energy[:300], seed=7))
    other = natural_head_motion(300, 25, energy[:300], seed=8)
    assert float((same - other)[:, :3].abs().max()) * DEG > 1.0
    assert torch.equal(natural_head_motion(300, 25, energy[:300], seed=7, strength=0.0), torch.zeros(300, 6))


def test_natural_motion_moves_more_while_speaking_and_nods_on_syllables():
    audio = _speech_and_pauses(24.0, speak=4.0, pause=4.0)
    energy = speech_energy(audio, 25)
    t = torch.arange(600) / 25
    # the middle of each segment (the envelope takes ~0.5 s to follow the voice)
    speaking = ((t % 8) > 1.0) & ((t % 8) < 3.5)
    pausing = ((t % 8) > 5.0) & ((t % 8) < 7.5)
    for seed in range(4):
        motion = natural_head_motion(600, 25, energy, seed=seed)
        velocity, _ = _velocity_and_acceleration(motion, 25)
        speed = velocity.abs().sum(-1)
        assert float(speed[speaking[1:]].mean()) > 1.5 * float(speed[pausing[1:]].mean())
        # the pitch carries nods while speaking: its motion in speech is well above the pauses'
        pitch_speed = velocity[:, 0].abs()
        assert float(pitch_speed[speaking[1:]].mean()) > 1.5 * float(pitch_speed[pausing[1:]].mean())
    # no speech information: a steady drift without nods
    steady = natural_head_motion(600, 25, None, seed=0)
    assert float(steady[:, 1].abs().max()) > 0 and torch.equal(steady, natural_head_motion(600, 25, seed=0))


def test_natural_motion_is_frame_rate_independent():
    for seed in (0, 5):
        at25 = natural_head_motion(250, 25, None, seed=seed)
        at50 = natural_head_motion(500, 50, None, seed=seed)
        assert torch.allclose(at50[::2], at25, atol=1e-6)
    audio = _speech_and_pauses(10.0)
    # energy at a fixed rate: exactly the same head path at shared times
    grid = speech_energy(audio, 100)
    at25 = natural_head_motion(250, 25, grid, seed=3, energy_fps=100)
    at50 = natural_head_motion(500, 50, grid, seed=3, energy_fps=100)
    at30 = natural_head_motion(300, 30, grid, seed=3, energy_fps=100)
    assert torch.allclose(at50[::2], at25, atol=1e-6)
    assert torch.allclose(at30[::6], at25[::5], atol=1e-6)  # every 0.2 s
    # per-frame energy (sampled at each rate): the same path up to that sampling (nods of ~4° agree within 1°)
    per_frame25 = natural_head_motion(250, 25, speech_energy(audio, 25), seed=3)
    per_frame50 = natural_head_motion(500, 50, speech_energy(audio, 50), seed=3)
    assert float((per_frame50[::2] - per_frame25)[:, :3].abs().max()) * DEG < 1.0
    assert float((per_frame50[::2] - per_frame25)[:, 1:3].abs().max()) * DEG < 0.1


def _bounds_of_total(base_degrees: torch.Tensor, limits: NaturalMotionLimits) -> tuple[torch.Tensor, torch.Tensor]:
    """The range each total angle (pitch, yaw, roll, degrees) must stay in: ±limit, stretched to the base."""
    limit = torch.tensor([limits.pitch_degrees, limits.yaw_degrees, limits.roll_degrees], dtype=torch.float64)
    return torch.minimum(-limit, base_degrees), torch.maximum(limit, base_degrees)


def test_natural_motion_bounds_are_absolute_on_a_turned_photos_total_pose():
    limits = NaturalMotionLimits()
    activity = speech_activity(_clip(_voiced_speech(20.0, speak=3.0, pause=2.0)), 100)
    # (pitch, yaw, roll) degrees: turned beyond the yaw bound either way, beyond every bound, near the bounds
    for base_degrees in ((0.0, 25.0, 0.0), (0.0, -25.0, 0.0), (12.0, -30.0, 8.0), (3.0, 10.0, 2.0),
                         (-7.5, 11.5, -4.5)):
        base = torch.tensor([base_degrees], dtype=torch.float64)
        low, high = _bounds_of_total(base[0], limits)
        spread = []
        for strength in (0.5, 1.0, 2.0, 3.0):
            for seed in range(30):
                motion = natural_head_motion(500, 25, activity, seed=seed, strength=strength, energy_fps=100,
                                             base_euler=base / DEG).double() * DEG
                total = base + motion[:, :3]
                assert bool((total >= low - 1e-5).all() and (total <= high + 1e-5).all()), (base_degrees, seed)
                assert float(motion[:, :3].abs().max()) < limits.yaw_degrees  # never more than a limit away
                if strength == 1.0:
                    spread.append(float(motion[:, 1].std()))
        # the motion is not frozen at the edge: it still turns (inwards) by degrees
        assert min(spread) > 1.0 and sum(spread) / len(spread) > 2.0, base_degrees
    # a photo turned 25° stays between 13° and 25° (the offset bound alone would have let it reach 37°)
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose

    avatar, motion = _portrait(euler=(0.0, math.radians(25), 0.0)), _speaking_motion(16.0, speak=4.0, pause=4.0)
    for seed in range(8):
        yaw = resolve_pose(PoseRecipe(mode="natural", seed=seed, pose_strength=3.0), avatar, motion).euler[:, 1] * DEG
        assert float(yaw.max()) <= 25.0 + 1e-4 and float(yaw.min()) > 13.0 and float(yaw.max() - yaw.min()) > 3.0


def test_natural_motion_starts_at_the_photos_pose():
    activity = speech_activity(_clip(_voiced_speech(6.0)), 100)  # loud voiced speech from the first instant
    assert float(activity[:10].mean()) > 0.2
    for fps in (24.0, 25.0, 30.0, 60.0):
        for seed in range(20):
            for strength, base in ((1.0, None), (3.0, torch.tensor([[0.1, 0.45, -0.05]])), (0.5, None)):
                motion = natural_head_motion(int(5 * fps), fps, activity, seed=seed, strength=strength,
                                             energy_fps=100, base_euler=base)
                assert torch.equal(motion[0], torch.zeros(6)), (fps, seed)
                # and from rest: the first step is a small fraction of a degree, while the head then moves
                step = float((motion[1] - motion[0])[:3].abs().max()) * DEG
                assert step < 0.25 * max(strength, 1.0) * 25 / fps, (fps, seed, step)
                assert float(motion[:, :3].abs().max()) * DEG > 1.0
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose

    avatar, clip = _portrait(), _speaking_motion(4.0, speak=4.0, pause=0.0)
    for mode in ("natural", "orbit", "keyframes"):
        for seed in range(6):
            pose = resolve_pose(PoseRecipe(mode=mode, seed=seed, natural_on_top=True, keyframes="0: 0, 0; 2: 8, 3"),
                                avatar, clip)
            assert torch.equal(pose.euler[0], avatar.euler[0]) and torch.equal(pose.trans[0], avatar.trans[0])


def test_a_silent_listener_keeps_a_living_motion():
    # speech of 3 s, then pauses of 5 s: in the pauses the head calms down but keeps moving
    activity = speech_activity(_clip(_voiced_speech(40.0, speak=3.0, pause=5.0)), 100)
    t = torch.arange(1000) / 25
    speaking, pausing = ((t % 8) > 0.8) & ((t % 8) < 2.6), ((t % 8) > 3.8) & ((t % 8) < 7.6)
    ratios = []
    for seed in range(12):
        velocity, _ = _velocity_and_acceleration(natural_head_motion(1000, 25, activity, seed=seed, energy_fps=100), 25)
        speed = velocity.abs().sum(-1)
        ratios.append(float(speed[pausing[1:]].mean()) / float(speed[speaking[1:]].mean()))
    # a floor of a third of the speaking motion in every clip (and more on average); at most two thirds
    assert min(ratios) > 0.33 and sum(ratios) / len(ratios) > 0.4 and max(ratios) < 0.67, ratios
    # a clip that is silent throughout: a listener's motion, degrees of it, not a freeze
    silence = torch.zeros(4001)
    for seed in range(12):
        still = natural_head_motion(1000, 25, silence, seed=seed, energy_fps=100)
        velocity, _ = _velocity_and_acceleration(still, 25)
        assert float(still[:, 1].std()) * DEG > 1.8 and float(velocity.abs().sum(-1).mean()) > 4.5, seed


def test_music_under_the_voice_does_not_drive_the_head():
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose
    from r3dp_core.pipeline.types import Motion

    def speed(wave: np.ndarray, seed: int) -> float:
        motion = Motion(exp=torch.zeros(300, 64), fps=25.0, audio=_clip(wave).to_comfy())
        euler = resolve_pose(PoseRecipe(mode="natural", seed=seed), _portrait(), motion).euler.double() * DEG
        return float(torch.diff(euler[50:], dim=0).abs().sum(-1).mean()) * 25  # past the fade-in

    silence, music, voice = np.zeros(12 * 16000), _loud_music(12.0), _voiced_speech(12.0)
    for seed in range(3):
        quiet = speed(silence, seed)
        assert speed(music, seed) < 1.05 * quiet  # loud music alone: a listener's motion, as in silence
        assert speed(voice, seed) > 1.6 * speed(music, seed)  # the voice drives the head


def test_natural_motion_rejects_bad_arguments():
    with pytest.raises(InputError, match="strength must be >= 0"):
        natural_head_motion(10, 25, strength=-1)
    with pytest.raises(InputError, match="fps must be positive"):
        natural_head_motion(10, 0)
    with pytest.raises(InputError, match=r"speech_activity must be \[N\]"):
        natural_head_motion(10, 25, torch.zeros(10, 2))
    with pytest.raises(InputError, match=r"base_euler must be \[1,3\] or \[10,3\]"):
        natural_head_motion(10, 25, base_euler=torch.zeros(4, 3))


def _driving_pose(frames: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(frames, dtype=torch.float32)
    euler = torch.stack([0.1 * torch.sin(t / 5), 0.05 + 0.2 * torch.sin(t / 7), 0.03 * torch.cos(t / 3)], 1)
    trans = torch.stack([0.1 * torch.sin(t / 4), 0.05 * torch.cos(t / 6), torch.full_like(t, 0.3)], 1)
    return euler, trans


def test_pose_strength_scales_deviations_linearly():
    euler, trans = _driving_pose()
    still_e, still_t = scale_pose(euler, trans, 0.0)
    assert torch.equal(still_e, euler[:1].expand_as(euler)) and torch.equal(still_t, trans[:1].expand_as(trans))
    same_e, same_t = scale_pose(euler, trans, 1.0)
    assert torch.allclose(same_e, euler) and torch.allclose(same_t, trans)
    half_e, _ = scale_pose(euler, trans, 0.5)
    double_e, double_t = scale_pose(euler, trans, 2.0)
    assert torch.allclose(double_e - euler[:1], 2 * (euler - euler[:1]), atol=1e-6)
    assert torch.allclose(double_t - trans[:1], 2 * (trans - trans[:1]), atol=1e-6)
    assert torch.allclose(half_e - euler[:1], 0.5 * (double_e - euler[:1]) / 2, atol=1e-6)
    mean_e, mean_t = scale_pose(euler, trans, 0.0, reference="mean")
    assert torch.allclose(mean_e, euler.mean(0, keepdim=True).expand_as(euler))
    assert torch.allclose(scale_pose(euler, trans, 3.0, "mean")[0].mean(0), euler.mean(0), atol=1e-6)
    with pytest.raises(InputError, match="'first' or 'mean'"):
        scale_pose(euler, trans, 1.0, reference="last")


def test_natural_deviation_adds_to_a_base_pose():
    euler, trans = torch.tensor([[0.1, -0.2, 0.0]]), torch.tensor([[0.0, 0.1, 0.4]])
    deviation = natural_head_motion(50, 25, None, seed=1)
    new_euler, new_trans = apply_deviation(euler, trans, deviation)
    assert new_euler.shape == new_trans.shape == (50, 3)
    assert torch.allclose(new_euler - euler, deviation[:, :3]) and torch.allclose(new_trans - trans, deviation[:, 3:])
    assert torch.equal(new_trans[:, 2], trans[:, 2].expand(50))  # depth fixed, as official


# ------------------------------------------------------------------------------ through the head-pose recipe

def _portrait(euler=(0.05, -0.12, 0.02), trans=(0.02, -0.03, -1.5)):
    from r3dp_core.standins import synthetic_avatar

    return dataclasses.replace(synthetic_avatar(32), euler=torch.tensor([euler]), trans=torch.tensor([trans]))


def _speaking_motion(seconds: float, fps: float = 25.0, **audio_args):
    from r3dp_core.pipeline.types import Motion

    audio = _speech_and_pauses(seconds, **audio_args)
    frames = int(round(seconds * fps))
    return Motion(exp=torch.zeros(frames, 64), fps=fps, audio=audio.to_comfy())


def test_natural_recipe_is_the_photos_pose_plus_bounded_seeded_speech_driven_motion():
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose

    avatar, motion = _portrait(), _speaking_motion(16.0, speak=4.0, pause=4.0)      # 400 frames
    limits = NaturalMotionLimits()
    pose = resolve_pose(PoseRecipe(mode="natural", seed=5), avatar, motion)
    assert pose.euler.shape == pose.trans.shape == (400, 3) and pose.smooth_kernel == 7
    deviation = (pose.euler - avatar.euler) * DEG
    peak = deviation.abs().amax(0)
    assert peak[0] < limits.pitch_degrees and peak[1] < limits.yaw_degrees and peak[2] < limits.roll_degrees
    total = (pose.euler * DEG).abs().amax(0)  # the photo is nearly frontal: the total is inside the bounds
    assert total[0] < limits.pitch_degrees and total[1] < limits.yaw_degrees and total[2] < limits.roll_degrees
    assert torch.equal(pose.euler[0], avatar.euler[0]) and torch.equal(pose.trans[0], avatar.trans[0])
    assert peak[1] > 2.0  # it does move: several degrees of yaw over 16 s
    assert float((pose.trans - avatar.trans)[:, :2].abs().max()) < limits.sway
    assert torch.equal(pose.trans[:, 2], avatar.trans[0, 2].expand(400))  # depth fixed
    # more motion while speaking than in the pauses (the motion's own sound drives it)
    speed = torch.diff(deviation, dim=0).abs().sum(-1)
    t = torch.arange(1, 400) / 25
    speaking, pausing = ((t % 8) > 1.0) & ((t % 8) < 3.5), ((t % 8) > 5.0) & ((t % 8) < 7.5)
    assert float(speed[speaking].mean()) > 1.5 * float(speed[pausing].mean())
    # seeded: the same seed, the same path; another seed, another path
    assert torch.equal(resolve_pose(PoseRecipe(mode="natural", seed=5), avatar, motion).euler, pose.euler)
    other = resolve_pose(PoseRecipe(mode="natural", seed=6), avatar, motion)
    assert float((other.euler - pose.euler).abs().max()) * DEG > 1.0
    # frame-rate independent: the energy is read on a fixed 100 Hz grid
    at50 = resolve_pose(PoseRecipe(mode="natural", seed=5), avatar, _speaking_motion(16.0, 50.0, speak=4.0,
                                                                                       pause=4.0))
    assert torch.allclose(at50.euler[::2], pose.euler, atol=1e-6)
    # no sound: the calm energy-free drift; strength 0: the photo's pose held
    silent = dataclasses.replace(motion, audio=None)
    drift = resolve_pose(PoseRecipe(mode="natural", seed=5), avatar, silent)
    expected = natural_head_motion(400, 25, None, seed=5, base_euler=avatar.euler)
    assert torch.allclose(drift.euler - avatar.euler, expected[:, :3], atol=1e-6)
    held = resolve_pose(PoseRecipe(mode="natural", seed=5, pose_strength=0.0), avatar, motion)
    assert torch.equal(held.euler, avatar.euler.expand(400, 3)) and torch.equal(held.trans, avatar.trans.expand(400, 3))
    # strength scales natural motion linearly up to 1; above, more motion inside the same absolute bounds
    half = resolve_pose(PoseRecipe(mode="natural", seed=5, pose_strength=0.5), avatar, motion)
    assert torch.allclose(half.euler - avatar.euler, 0.5 * (pose.euler - avatar.euler), atol=1e-6)
    for strength in (2.0, 3.0):
        more = resolve_pose(PoseRecipe(mode="natural", seed=5, pose_strength=strength), avatar, motion)
        assert float((more.euler - avatar.euler)[:, 1].std()) > 1.3 * float((pose.euler - avatar.euler)[:, 1].std())
        total = (more.euler * DEG).abs().amax(0)
        assert total[0] < limits.pitch_degrees and total[1] < limits.yaw_degrees and total[2] < limits.roll_degrees


def test_pose_strength_scales_a_driving_pose_and_leaves_drawn_paths_alone():
    from r3dp_core.geometry.camera import driving_pose, orbit_pose
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose
    from r3dp_core.pipeline.types import Motion

    avatar = _portrait()
    euler, trans = _driving_pose(40)
    video = Motion(exp=torch.zeros(40, 64), euler=euler, trans=trans)
    mapped = driving_pose(euler, trans, 40, avatar.euler, avatar.trans)
    for strength in (0.0, 0.5, 1.0, 2.0):
        pose = resolve_pose(PoseRecipe(mode="driving", pose_strength=strength), avatar, video)
        # linear about the first frame (the photo's pose, since the driving pose is mapped onto it)
        assert torch.allclose(pose.euler - avatar.euler, strength * (mapped.euler - avatar.euler), atol=1e-6)
        assert torch.allclose(pose.trans - avatar.trans, strength * (mapped.trans - avatar.trans), atol=1e-6)
    unmapped = resolve_pose(PoseRecipe(mode="driving", map_to_init_pose=False, pose_strength=0.0), avatar, video)
    assert torch.allclose(unmapped.euler, euler[:1].expand(40, 3))  # held at the driving pose's first frame
    # static has nothing to scale; orbit angles are given in degrees and keep them
    audio = Motion(exp=torch.zeros(40, 64))
    assert torch.equal(resolve_pose(PoseRecipe(mode="static", pose_strength=2.0), avatar, audio).euler,
                       avatar.euler.expand(40, 3))
    orbit = resolve_pose(PoseRecipe(mode="orbit", pose_strength=0.0), avatar, audio)
    assert torch.equal(orbit.euler, orbit_pose(avatar.euler, avatar.trans, 40).euler)
    # ... unless they carry natural motion on top, which the strength scales
    on_top = resolve_pose(PoseRecipe(mode="orbit", natural_on_top=True, seed=2), avatar, audio)
    assert torch.allclose(on_top.euler - orbit.euler,
                          natural_head_motion(40, 25, None, seed=2, base_euler=orbit.euler)[:, :3], atol=1e-6)
    # bounded on the path + motion: where the ±20° sweep is beyond the ±12° of yaw it is never taken further out
    beyond = (orbit.euler[:, 1] * DEG).abs() > 12
    assert bool(beyond.any()) and bool(((on_top.euler[:, 1].abs() <= orbit.euler[:, 1].abs() + 1e-6) | ~beyond).all())
    keyed = PoseRecipe(mode="keyframes", keyframes="0: 0, 0; 1: 10, -4", natural_on_top=True, seed=2,
                       pose_strength=0.5)
    path = resolve_pose(dataclasses.replace(keyed, natural_on_top=False), avatar, audio)
    assert torch.allclose(resolve_pose(keyed, avatar, audio).euler - path.euler,
                          natural_head_motion(40, 25, None, seed=2, strength=0.5, base_euler=path.euler)[:, :3],
                          atol=1e-6)
    assert torch.allclose(path.euler[25] - avatar.euler[0], torch.tensor([-4.0, 10.0, 0.0]) / DEG, atol=1e-6)


def test_pose_smoothing_window_reaches_the_cameras_through_the_recipe():
    from r3dp_core.errors import InputError
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose
    from r3dp_core.pipeline.types import Motion

    avatar = _portrait()
    euler, trans = _driving_pose(40)
    jittery = euler + torch.randn(40, 3, generator=torch.Generator().manual_seed(1)) * 0.02
    video = Motion(exp=torch.zeros(40, 64), euler=jittery, trans=trans)
    roughness = []
    for window in (1, 3, 7, 15):
        pose = resolve_pose(PoseRecipe(mode="driving", pose_smoothing=window), avatar, video)
        assert pose.smooth_kernel == (None if window == 1 else window)
        smoothed_euler, _ = camera_to_pose(pose.cameras())
        roughness.append(float(torch.diff(smoothed_euler, n=2, dim=0).abs().mean()))
    raw = resolve_pose(PoseRecipe(mode="driving", pose_smoothing=1), avatar, video)
    assert torch.equal(raw.cameras(), eg3d_cameras(raw.euler, raw.trans))
    assert roughness[0] > 2 * roughness[1] > 0 and roughness[1] > roughness[2] > roughness[3]
    for bad in (0, 4, -3):
        with pytest.raises(InputError, match=f"odd number of frames >= 1 .official 7, 1 = none., got {bad}"):
            PoseRecipe(pose_smoothing=bad)
    with pytest.raises(InputError, match=r"pose strength 3.5 is outside 0..3"):
        PoseRecipe(pose_strength=3.5)
