"""The persona nodes (``nodes/persona.py``) without ComfyUI: schemas, the persona folders they list, and that every
node's ``execute`` is one call of ``r3dp_core.talk3d.animate`` / ``personalise`` with the same frames as the core
(against the fake of ``tests/fakes/comfyui.py``, on the tiny stand-in persona); the real ComfyUI runs the persona
workflows in ``tests/e2e``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fakes.comfyui import Interrupted, bound, fake_comfyui

from r3dp_core.errors import InputError, ModelFileError

REPO = Path(__file__).resolve().parents[1]
SECONDS = 0.48                                  # 12 frames of speech; the stand-in persona's video has 25
UNLINKED = SimpleNamespace(all_node_ids=lambda: ["7", "8"], get_node=lambda i: {"inputs": {"x": ["7", 0]}})
LINKED = SimpleNamespace(all_node_ids=lambda: ["7", "8"], get_node=lambda i: {"inputs": {"x": ["7", 1]}})


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    from r3dp_core.standins import write_tiny_wav2vec2
    from r3dp_core.talk3d.standin_persona import write_standin_persona

    with fake_comfyui(tmp_path_factory.mktemp("comfy"), REPO) as fake:
        write_standin_persona(fake.models / "personas" / "alice", seconds=1.0, seed=3)
        write_standin_persona(fake.base / "extra" / "personas" / "bob", seconds=1.0, seed=4)
        (fake.models / "personas" / "half_trained" / "prepared").mkdir(parents=True)   # no persona.json yet
        write_tiny_wav2vec2(fake.models)
        yield fake


@pytest.fixture(scope="module")
def speech():
    from r3dp_core.standins import standin_speech

    return {"waveform": torch.from_numpy(standin_speech(SECONDS, 16000))[None, None], "sample_rate": 16000}


@pytest.fixture(scope="module")
def drive(comfy, speech):
    """Persona Loader → Load wav2vec2 → Persona Audio → Tri-plane, as a graph runs them."""
    persona_nodes = comfy.nodes.persona
    persona, frames = persona_nodes.PersonaLoader.execute("alice").args
    wav2vec2 = persona_nodes.LoadWav2Vec2.execute("wav2vec2/wav2vec2-large-xlsr-53-esperanto").args[0]
    planes, audio, fps, count = bound(persona_nodes.PersonaAudioToTriplane).execute(
        persona, speech, wav2vec2, "replay", "replay", 5).args
    return SimpleNamespace(persona=persona, training_frames=frames, wav2vec2=wav2vec2, planes=planes, audio=audio,
                           fps=fps, count=count)


def _render(comfy, planes, camera=None, seed=5, dynprompt=UNLINKED):
    return bound(comfy.nodes.volume_render.VolumeRender, dynprompt=dynprompt).execute(planes, seed, 4, camera).args


def test_persona_nodes_are_listed_with_their_sockets(comfy):
    schemas = {cls.define_schema().node_id: cls.define_schema() for cls in comfy.nodes.NODE_CLASSES}
    assert schemas["R3DP_PersonaLoader"].outputs[0].io_type == "R3DP_PERSONA"
    assert schemas["R3DP_PersonaAudioToTriplane"].outputs[0].io_type == "R3DP_PERSONA_PLANES"
    assert [o.io_type for o in schemas["R3DP_PersonaSuperResolution"].outputs] == ["IMAGE", "AUDIO", "FLOAT"]
    assert schemas["R3DP_PersonaPasteBackStream"].outputs[0].io_type == "R3DP_FRAMES"      # into Save Video (r3dp)
    assert schemas["R3DP_Personalise"].outputs[0].io_type == "R3DP_PERSONA"
    # one render node for both families: the saved R3DP_PLANES links still fit, and a persona's planes too
    planes = next(i for i in schemas["R3DP_VolumeRender"].inputs if i.id == "planes")
    assert planes.io_type == "R3DP_PLANES,R3DP_PERSONA_PLANES" and not planes.optional
    camera = next(i for i in schemas["R3DP_VolumeRender"].inputs if i.id == "camera")
    assert "roll and translation are dropped" in camera.tooltip and "replays the training video's cameras" in \
        camera.tooltip
    audio = schemas["R3DP_PersonaAudioToTriplane"]
    assert {i.id: getattr(i, "options", None) for i in audio.inputs}["blink"] == ["schedule", "replay", "none"]
    assert {i.id: getattr(i, "options", None) for i in audio.inputs}["head_tokens"] == ["neutral", "replay"]


def test_persona_loader_lists_complete_personas_of_every_model_folder(comfy):
    schema = comfy.nodes.persona.PersonaLoader.define_schema()
    assert schema.inputs[0].options == ["alice", "bob"]                     # bob: extra_model_paths' folder
    persona, frames = comfy.nodes.persona.PersonaLoader.execute("bob").args
    assert frames == persona.num_frames == 25 and persona.folder == comfy.base / "extra" / "personas" / "bob"
    assert persona.image_size == 64 and not persona.generator.training
    with pytest.raises(ModelFileError) as missing:
        comfy.nodes.persona.PersonaLoader.execute("half_trained")
    assert str(comfy.models / "personas") in str(missing.value) and "Personalise" in str(missing.value)
    with pytest.raises(ModelFileError, match="one folder name"):
        comfy.nodes.persona.PersonaLoader.execute("../alice")


def test_audio_to_triplane_is_the_cores_drive(comfy, drive, speech):
    from r3dp_core.talk3d.animate import drive_from_speech
    from r3dp_core.talk3d.audio_features import stream_config_for

    assert drive.count == round(25 * SECONDS) == drive.planes.num_frames and drive.fps == 25.0
    assert drive.audio is drive.planes.drive.sound
    expected = drive_from_speech(drive.persona, speech, drive.wav2vec2.module, blink="replay", head_tokens="replay",
                                 seed=5, stream_config=stream_config_for(drive.wav2vec2.folder))
    got = drive.planes.drive
    for name in ("audio_features", "eye", "head_angles", "landmarks", "source_frames"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert got.head_tokens == "replay" and got.blink == "replay"


def test_volume_render_and_super_resolution_give_the_cores_frames(comfy, drive):
    """Volume Render only wires the persona render (nothing computed, training cameras replayed); Persona
    Super-Resolution pulls it chunk by chunk with progress: the frames are persona_frames' of the same seed."""
    from r3dp_core.images import to_comfy_image
    from r3dp_core.talk3d.animate import persona_frames

    comfy.state.progress.clear()
    render, raw = _render(comfy, drive.planes)
    assert raw is None and comfy.state.progress == []
    persona = drive.persona
    assert torch.equal(render.yaw_pitch, persona.tracks["yaw_pitch"][drive.planes.drive.source_frames])
    assert render.replayed
    images, audio, fps = bound(comfy.nodes.persona.PersonaSuperResolution, unique_id="9").execute(
        render, 5, False).args
    assert images.shape == (drive.count, 64, 64, 3) and audio is drive.audio and fps == 25.0
    expected = torch.cat([to_comfy_image(f) for f in persona_frames(persona, drive.planes.drive, render.yaw_pitch,
                                                                    seed=5, chunk=8)])
    assert torch.allclose(images, expected, atol=1e-5)
    assert [p[1:3] for p in comfy.state.progress if p[0] == "9"] == [(5, 12), (10, 12), (12, 12)]
    # raw_rgb connected: the same frames, computed by Volume Render itself
    raw = _render(comfy, drive.planes, dynprompt=LINKED)[1]
    assert torch.allclose(raw, images, atol=1e-5)
    # the two families' renders do not mix
    with pytest.raises(InputError, match="Persona Super-Resolution"):
        bound(comfy.nodes.htbsr_composite.HtbsrComposite).execute(render, 0.9, 4, False)
    with pytest.raises(InputError, match="renders personas"):
        bound(comfy.nodes.persona.PersonaSuperResolution).execute(object(), 4, False)


def test_paste_back_image_and_stream_paths_agree(comfy, drive):
    """Persona Paste Back (IMAGE frames) and Persona Paste Back (stream) → Save Video (r3dp) paste the same frames
    into the training video's frames (at its size, forward then backward), the mp4 carrying the speech; Cancel
    leaves no file."""
    from r3dp_core.talk3d.animate import paste_into_source
    from r3dp_core.video_io import VideoWriter, probe_video

    persona_nodes = comfy.nodes.persona
    render = _render(comfy, drive.planes)[0]
    images = bound(persona_nodes.PersonaSuperResolution).execute(render, 4, False).args[0]
    pasted = bound(persona_nodes.PersonaPasteBack).execute(images, drive.planes).args[0]
    assert pasted.shape == (drive.count, 96, 128, 3)
    expected = np.concatenate(list(paste_into_source(drive.persona, drive.planes.drive,
                                                     [images.permute(0, 3, 1, 2) * 2 - 1])))
    assert np.abs(pasted.mul(255).round().numpy() - expected).max() <= 1
    with pytest.raises(InputError, match="frames for a drive of 12"):
        bound(persona_nodes.PersonaPasteBack).execute(images[:5], drive.planes)

    source = persona_nodes.PersonaPasteBackStream.execute(render).args[0]
    assert (source.width, source.height, source.num_frames) == (128, 96, drive.count)
    written = []
    original = VideoWriter.write
    try:
        VideoWriter.write = lambda self, frames: written.append(frames.copy()) or original(self, frames)
        out = bound(comfy.nodes.paste_back.SaveVideo, unique_id="4").execute(source, 25.0, "r3dp/persona", 5,
                                                                             audio=drive.audio)
    finally:
        VideoWriter.write = original
    assert [len(w) for w in written] == [5, 5, 2]
    assert np.abs(np.concatenate(written).astype(int) - pasted.mul(255).round().numpy().astype(int)).max() <= 1
    name = out.ui["images"][0]["filename"]
    info = probe_video(comfy.base / "output" / "r3dp" / name)
    assert info["frames"] == drive.count and (info["width"], info["height"]) == (128, 96)
    assert info["audio_seconds"] == pytest.approx(SECONDS, abs=0.05)
    comfy.state.checks, comfy.state.interrupt_after = 0, 1
    try:
        with pytest.raises(Interrupted):
            bound(comfy.nodes.paste_back.SaveVideo).execute(source, 25.0, "r3dp/persona", 5)
    finally:
        comfy.state.interrupt_after = None
    assert sorted(p.name for p in (comfy.base / "output" / "r3dp").iterdir() if "persona" in p.name) == [name]


def test_head_pose_turns_a_persona_and_paste_back_needs_the_training_cameras(comfy, drive):
    """Head Pose's recipe reaches the persona through the core's persona_head_pose (auto/replay: the training
    cameras); any other path is for the crop: Persona Paste Back (stream) refuses it."""
    from r3dp_core.pipeline.persona import persona_head_pose
    from r3dp_core.pipeline.pose import PoseRecipe
    from r3dp_core.talk3d.animate import persona_cameras

    head_pose = comfy.nodes.head_pose.HeadPose
    auto = head_pose.execute("auto", 0.0, 0.0, 1.0, "0: 0, 0", "smooth", True, True).args[0]
    replayed = _render(comfy, drive.planes, camera=auto)[0]
    assert replayed.replayed and torch.equal(replayed.yaw_pitch, _render(comfy, drive.planes)[0].yaw_pitch)
    keyframes = head_pose.execute("keyframes", 0.0, 0.0, 1.0, "0: 0, 0; 0.2: 15, 0", "linear", False, True).args[0]
    turned = _render(comfy, drive.planes, camera=keyframes)[0]
    assert not turned.replayed
    expected = persona_cameras(drive.persona, drive.planes.drive,
                               persona_head_pose(keyframes, drive.persona, drive.planes.drive))
    assert torch.equal(turned.yaw_pitch, expected)
    assert abs(float(turned.yaw_pitch[-1, 0] - turned.yaw_pitch[0, 0])) == pytest.approx(0.2618, abs=0.01)  # 15°
    with pytest.raises(InputError, match="disconnect Volume Render's camera"):
        comfy.nodes.persona.PersonaPasteBackStream.execute(turned)
    with pytest.raises(InputError, match="driving"):
        _render(comfy, drive.planes, camera=PoseRecipe(mode="driving"))


def test_paste_back_checks_the_training_video(comfy, drive, tmp_path):
    from r3dp_core.talk3d.standin_persona import write_source_video

    render = _render(comfy, drive.planes)[0]
    other = write_source_video(tmp_path / "other.mp4", 1.0, seed=9)
    video = SimpleNamespace(get_stream_source=lambda: str(other))
    with pytest.raises(InputError, match="SHA-256"):
        comfy.nodes.persona.PersonaPasteBackStream.execute(render, video=video)


def test_personalise_node_trains_with_progress_previews_and_interrupt(comfy, monkeypatch, tmp_path):
    """The node is one personalise() call: options from the widgets, the persona folder in models/…/personas, the
    host's progress with the newest preview image, Cancel → ComfyUI's interrupt (the checkpoint saved by core)."""
    from PIL import Image

    from r3dp_core.talk3d.personalise import run
    from r3dp_core.talk3d.personalise.training import TrainingInterrupted
    from r3dp_core.talk3d.standin_persona import write_standin_persona

    video = tmp_path / "talking.mp4"
    video.write_bytes(b"not decoded by the fake")
    calls = []

    def fake_personalise(options, *, host, say, on_step=None):
        calls.append(options)
        folder = Path(options.out)
        (folder / "previews").mkdir(parents=True, exist_ok=True)
        for step in range(1, 5):
            host.check()
            if step == 2:
                Image.new("RGB", (8, 4), (255, 0, 0)).save(folder / "previews" / "step_000002.png")
            host.report(step, 4, None)
        write_standin_persona(folder, seconds=0.4, seed=1)
        say("wrote persona")
        return run.PersonaliseResult(folder, 4, None, {}, ["l1"])

    monkeypatch.setattr(run, "personalise", fake_personalise)
    node = bound(comfy.nodes.persona.Personalise, unique_id="3")
    comfy.state.progress.clear()
    persona, folder = node.execute("carol", "tiny", 4, 2, 0.0, 0.0, "", 0, False, video_path=str(video)).args
    options = calls[-1]
    assert Path(folder) == comfy.models / "personas" / "carol" == Path(options.out)
    assert (options.preset, options.steps, options.save_every, options.face, options.video) == (
        "tiny", 4, 2, None, video)
    assert options.start is None and options.end is None and options.device == "cpu"
    assert persona.num_frames == 10 and persona.folder == Path(folder)
    progress = [p for p in comfy.state.progress if p[0] == "3"]
    assert [p[1:3] for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [p[3] is not None for p in progress] == [False, True, False, False]   # a new preview is shown once
    assert "carol" in comfy.nodes.persona.PersonaLoader.define_schema().inputs[0].options

    def interrupted(options, *, host, say, on_step=None):
        try:
            host.check()
        except Interrupted as exc:
            raise TrainingInterrupted(3, 4, exc) from exc

    monkeypatch.setattr(run, "personalise", interrupted)
    comfy.state.checks, comfy.state.interrupt_after = 0, 0
    try:
        with pytest.raises(Interrupted):
            node.execute("carol", "tiny", 4, 2, 0.0, 0.0, "1", 0, False, video_path=str(video))
    finally:
        comfy.state.interrupt_after = None
    with pytest.raises(InputError, match="Load Video or give video_path"):
        node.execute("carol", "tiny", 4, 2, 0.0, 0.0, "", 0, False)
    assert comfy.nodes.persona.Personalise.validate_inputs("a/b") != True   # noqa: E712 - an error message


def test_cli_and_node_frames_agree(comfy, tmp_path, monkeypatch):
    """The same persona, speech file and seed through `r3dp generate --persona --output video` and through the nodes
    (Load Audio (r3dp) → Persona Audio → Tri-plane → Volume Render → Persona Paste Back (stream) → Save Video (r3dp))
    hand the encoder the same frames."""
    from r3dp_core.cli import main
    from r3dp_core.standins import standin_speech, write_wav
    from r3dp_core.video_io import VideoWriter

    write_wav(comfy.base / "input" / "persona_speech.wav", standin_speech(SECONDS, 16000), 16000)
    written: list[np.ndarray] = []
    original = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, frames: written.append(frames.copy()) or original(
        self, frames))
    code = main(["generate", "--persona", str(comfy.models / "personas" / "alice"), "--audio",
                 str(comfy.base / "input" / "persona_speech.wav"), "--out", str(tmp_path / "cli.mp4"),
                 "--models-dir", str(comfy.models), "--device", "cpu", "--seed", "7", "--camera", "replay",
                 "--blink-source", "replay", "--output", "video"])
    assert code == 0
    cli = np.concatenate(written)
    written.clear()

    persona_nodes = comfy.nodes.persona
    audio = comfy.nodes.io.LoadAudio.execute("persona_speech.wav").args[0]
    persona = persona_nodes.PersonaLoader.execute("alice").args[0]
    wav2vec2 = persona_nodes.LoadWav2Vec2.execute("wav2vec2/wav2vec2-large-xlsr-53-esperanto").args[0]
    planes, sound, fps, _ = bound(persona_nodes.PersonaAudioToTriplane).execute(
        persona, audio, wav2vec2, "replay", "replay", 7).args
    render = _render(comfy, planes, seed=7)[0]
    source = persona_nodes.PersonaPasteBackStream.execute(render).args[0]
    bound(comfy.nodes.paste_back.SaveVideo).execute(source, fps, "r3dp/cli_twin", 8, audio=sound)
    nodes = np.concatenate(written)
    assert cli.shape == nodes.shape == (round(25 * SECONDS), 96, 128, 3)
    assert np.abs(cli.astype(int) - nodes.astype(int)).max() <= 1
