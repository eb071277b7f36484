"""The ComfyUI node layer without ComfyUI: schemas, folder registration, and that ``execute`` reaches r3dp_core
with the right tensors, against the stand-in of ``tests/fakes/comfyui.py``; the real ComfyUI is exercised by
``tests/e2e``.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import inspect
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fakes.comfyui import ComboInput, ComfyNode, Interrupted, bound, fake_comfyui

from r3dp_core.pipeline.face import FaceGeometry

REPO = Path(__file__).resolve().parents[1]
CORE_TYPES = {"IMAGE", "MASK", "AUDIO", "VIDEO", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    with fake_comfyui(tmp_path_factory.mktemp("comfy"), REPO) as fake:
        yield fake


# ----------------------------------------------------------------------------------------------- schemas

def test_extension_lists_every_node(comfy):
    listed = asyncio.run(comfy.nodes.R3DPExtension().get_node_list())
    assert listed == comfy.nodes.NODE_CLASSES
    ids = [cls.define_schema().node_id for cls in listed]
    assert len(ids) == len(set(ids)) == 32
    assert {"R3DP_ImageToTriplane", "R3DP_AudioToMotion", "R3DP_VideoToMotion", "R3DP_HeadPose", "R3DP_PnccBuilder",
            "R3DP_MotionAdapter", "R3DP_VolumeRender", "R3DP_HtbsrComposite", "R3DP_BackgroundLoader",
            "R3DP_SaveMotion", "R3DP_LoadMotion", "R3DP_SaveAvatar", "R3DP_LoadAvatar", "R3DP_TalkingPortrait",
            "R3DP_LoadAudio", "R3DP_PasteBack", "R3DP_PasteBackStream", "R3DP_SaveVideo", "R3DP_PersonaLoader",
            "R3DP_LoadWav2Vec2", "R3DP_PersonaAudioToTriplane", "R3DP_PersonaSuperResolution",
            "R3DP_PersonaPasteBack", "R3DP_PersonaPasteBackStream", "R3DP_Personalise"} <= set(ids)


def test_schemas_follow_the_registry_and_ui_rules(comfy):
    for cls in comfy.nodes.NODE_CLASSES:
        schema = cls.define_schema()
        assert cls.__bases__ == (ComfyNode,), f"{cls.__name__} must subclass ComfyNode directly (Manager scanner)"
        assert schema.node_id.startswith("R3DP_") and schema.display_name and schema.description
        assert schema.category.startswith("Real3DPortrait")
        for names in ([i.id for i in schema.inputs], [o.display_name for o in schema.outputs]):
            assert len(names) == len(set(names)), schema.node_id
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
        for item in [*schema.inputs, *schema.outputs]:
            assert item.io_type in CORE_TYPES or item.io_type.startswith("R3DP_"), (schema.node_id, item.io_type)
        user_files = schema.node_id in ("R3DP_LoadAudio", "R3DP_LoadMotion", "R3DP_LoadAvatar",
                                        "R3DP_PersonaLoader")  # may be empty
        for combo in (i for i in schema.inputs if isinstance(i, ComboInput)):
            assert combo.options or user_files, f"{schema.node_id}.{combo.id} has no options"
            assert combo.default is None or combo.default in combo.options
        signature = inspect.signature(cls.execute)
        assert {i.id for i in schema.inputs} == set(signature.parameters), schema.node_id
        for item in schema.inputs:
            if item.optional:  # ComfyUI leaves unconnected optional inputs out of the call
                assert signature.parameters[item.id].default is not inspect.Parameter.empty, (schema.node_id, item.id)
        if "validate_inputs" in cls.__dict__:
            # **kwargs would make ComfyUI skip its own min/max and option checks for every input
            assert inspect.getfullargspec(cls.validate_inputs).varkw is None, schema.node_id


def test_node_ids_are_string_literals_for_the_manager_scanner():
    for path in (REPO / "nodes").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Schema":
                node_id = next(k.value for k in node.keywords if k.arg == "node_id")
                assert isinstance(node_id, ast.Constant) and node_id.value.startswith("R3DP_"), path.name


# ----------------------------------------------------------------------------------------------- model folders

def test_model_folder_is_registered_in_front_of_extra_paths_and_merged(comfy):
    paths, extensions = comfy.folder_paths.folder_names_and_paths["real3dportrait"]
    assert paths == [os.path.join(comfy.folder_paths.models_dir, "real3dportrait"), str(comfy.base / "extra")]
    assert {".json", ".ckpt", ".safetensors", ".mat", ".task", ".tflite"} <= extensions
    motions, _ = comfy.folder_paths.folder_names_and_paths["r3dp_motions"]
    assert motions[0] == str(comfy.base / "output" / "r3dp" / "motions")


def test_dropdowns_offer_the_official_name_first_and_what_is_found(comfy):
    paths = comfy.nodes._paths
    (comfy.models / "secc2plane_torso").mkdir()
    (comfy.models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt").write_bytes(b"x")
    (comfy.models / "my_converted.safetensors").write_bytes(b"x")
    hubert = comfy.base / "extra" / "hubert" / "hubert-large-ls960-ft"
    hubert.mkdir(parents=True)
    (hubert / "config.json").write_text("{}")
    (hubert / "model.safetensors").write_bytes(b"x")
    video = paths.weight_file_options("video_model")
    assert video[0] == "secc2plane_torso/model_ckpt_steps_100000.ckpt"
    assert "my_converted.safetensors" in video and not any(o.startswith("hubert/") for o in video)
    audio = paths.weight_file_options("audio_model")
    assert audio[0] == "audio2secc_vae/model_ckpt_steps_400000.ckpt"  # absent, still offered
    assert paths.folder_options("hubert") == ["hubert/hubert-large-ls960-ft"]
    assert paths.resolve_model_folder("hubert", "hubert/hubert-large-ls960-ft") == hubert
    schema = comfy.nodes.loaders.LoadVideoModel.define_schema()
    assert schema.inputs[0].options == video


def test_missing_model_error_names_file_folders_and_source(comfy):
    from r3dp_core.errors import ModelFileError

    with pytest.raises(ModelFileError) as error:
        comfy.nodes._paths.resolve_model_file("segmenter", "selfie_multiclass_256x256.tflite")
    message = str(error.value)
    assert "'selfie_multiclass_256x256.tflite' was not found" in message
    assert str(comfy.models) in message and str(comfy.base / "extra") in message
    assert "https://storage.googleapis.com/mediapipe-models/image_segmenter" in message
    with pytest.raises(ModelFileError, match="hubert-large-ls960-ft"):
        comfy.nodes._paths.resolve_model_folder("hubert", "hubert/other")


# ----------------------------------------------------------------------------------------------- execute → core

def test_precision_widgets_follow_the_core_dtype_rule(comfy):
    node_dtype = importlib.import_module("nodes._runtime").node_dtype
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert node_dtype("auto", cuda) is torch.float32  # the fake ComfyUI deems fp16 unsafe on its GPU
    assert node_dtype("fp16", cuda) is torch.float16 and node_dtype("bf16", cuda) is torch.bfloat16
    assert node_dtype("auto", cpu) is torch.float32 and node_dtype("fp32", cpu) is torch.float32
    with pytest.warns(RuntimeWarning, match="CPU"):
        assert node_dtype("fp16", cpu) is torch.float32  # a workflow's fp16 on a CPU-only ComfyUI still runs


def _avatar(planes=True, size=64):
    from r3dp_core.standins import synthetic_avatar

    avatar = synthetic_avatar(size)
    if planes:
        avatar = dataclasses.replace(avatar, planes=torch.zeros(1, 3, 4, 8, 8))
    return avatar


def test_image_to_triplane_passes_each_portrait_to_core(comfy, monkeypatch):
    from r3dp_core.pipeline import stages

    nodes = comfy.nodes
    calls = []

    def prepare_source(image, kit, labels=None, min_face_area=0.2, face="largest", masks=None):
        calls.append(("prepare", image, kit, masks, min_face_area, face))
        return dataclasses.replace(_avatar(planes=False), id=torch.full((1, 80), float(len(calls))))

    def make_avatar(model, avatar):
        calls.append(("make", model))
        return dataclasses.replace(avatar, planes=torch.ones(1, 3, 4, 8, 8, dtype=torch.float16))

    monkeypatch.setattr(stages, "prepare_source", prepare_source)
    monkeypatch.setattr(stages, "make_avatar", make_avatar)
    module = torch.nn.Linear(2, 2)
    video = nodes.loaders.VideoModel(module, torch.float32, "v")
    face = FaceGeometry(torch.nn.Module(), None)
    image = torch.rand(2, 48, 40, 4)  # RGBA batch of two portraits
    out = bound(nodes.image_to_triplane.ImageToTriplane).execute(image, video, face, Path("lm.task"),
                                                      nodes.loaders.Segmenter(path=Path("seg.tflite")), 0.3, "1")
    prepared = [c for c in calls if c[0] == "prepare"]
    assert len(prepared) == 2 and [c[0] for c in calls] == ["prepare", "make", "prepare", "make"]
    for index, (_, u8, kit, masks, area, face_choice) in enumerate(prepared):
        expected = (image[index, ..., :3] * 255).round().to(torch.uint8).numpy()
        assert u8.dtype == np.uint8 and np.array_equal(u8, expected)
        assert kit.landmarker_path == Path("lm.task") and kit.segmenter_path == Path("seg.tflite")
        assert masks is None and area == 0.3 and face_choice == 1
    avatars, crops, heads, masks = out.args
    assert [float(a.id[0, 0]) for a in avatars] == [1.0, 3.0]
    assert all(a.planes.dtype == torch.float32 for a in avatars)
    assert crops.shape == (2, 64, 64, 3) and heads.shape == (2, 64, 64, 3) and masks.shape == (2, 64, 64)
    assert 0 <= float(crops.min()) and float(crops.max()) <= 1


def test_masks_replace_the_segmenter_per_portrait(comfy):
    from r3dp_core.errors import InputError

    nodes = comfy.nodes
    head = torch.zeros(2, 100, 200)
    head[0, :50] = 1
    head[1, 50:] = 1
    body = torch.ones(1, 100, 200)
    segmenter = nodes.loaders.SegmenterFromMasks.execute(head, 0.4, body).args[0]
    first, second, third = (segmenter.masks_for(i) for i in range(3))
    assert torch.equal(first.head, head[:1]) and all(torch.equal(m.head, head[1:]) for m in (second, third))
    assert all(torch.equal(m.body, body) and m.threshold == 0.4 for m in (first, second, third))
    assert nodes.loaders.Segmenter(path=Path("seg.tflite")).masks_for(0) is None
    single = nodes.loaders.SegmenterFromMasks.execute(head[0], 0.5).args[0].masks_for(1)
    assert single.head.shape == (1, 100, 200) and single.body is None
    with pytest.raises(InputError, match="head mask is 200x100 but the body mask 20x10"):
        nodes.loaders.SegmenterFromMasks.execute(head, 0.5, torch.ones(1, 10, 20))


def test_audio_to_motion_reaches_core_and_ends_with_the_clip(comfy, monkeypatch):
    import r3dp_core.audio.motion as motion_module

    nodes = comfy.nodes
    seen = {}

    def audio_to_motion(audio, model, hubert, *, mouth_amp, temperature, seed, progress=None):
        seen.update(audio=audio, model=model, hubert=hubert, mouth_amp=mouth_amp, temperature=temperature, seed=seed)
        progress(4, 8)
        return torch.arange(16 * 64, dtype=torch.float32).reshape(16, 64)  # padded length, longer than the clip

    monkeypatch.setattr(motion_module, "audio_to_motion", audio_to_motion)
    rate, seconds = 22050, 0.52
    waveform = torch.sin(torch.linspace(0, 400, int(rate * seconds)))[None, None].repeat(1, 2, 1) * 0.3
    a2m = nodes.loaders.AudioModel(torch.nn.Linear(1, 1), "a2m")
    hubert = nodes.loaders.Hubert(torch.nn.Linear(1, 1), torch.float32, "hubert")
    out = bound(nodes.audio_to_motion.AudioToMotion).execute({"waveform": waveform, "sample_rate": rate}, a2m, hubert,
                                                    0.6, 0.3, True, 7)
    motion, frames, fps = out.args
    assert seen["model"] is a2m.module and seen["hubert"] is hubert.module
    assert (seen["mouth_amp"], seen["temperature"], seen["seed"]) == (0.6, 0.3, 7)
    assert seen["audio"].source_rate == rate and seen["audio"].num_channels == 2
    assert frames == motion.num_frames == round(seconds * 25) and fps == 25.0
    assert torch.equal(motion.exp, torch.arange(16 * 64, dtype=torch.float32).reshape(16, 64)[:frames])
    assert motion.blink.shape == (frames,) and float(motion.blink.max()) > 0  # first blink starts at frame 0
    assert motion.audio["sample_rate"] == rate and torch.equal(motion.audio["waveform"], waveform)
    assert any(p[1:3] == (4, 8) for p in comfy.state.progress)      # the audio model's windows, 4 of 8


def test_video_to_motion_reaches_core_with_the_frames_and_keeps_the_audio(comfy, monkeypatch):
    import r3dp_core.pipeline.driving as driving
    from r3dp_core.pipeline.types import Motion

    nodes = comfy.nodes
    frames = torch.rand(10, 32, 48, 4)  # RGBA IMAGE batch
    seen = {}

    def motion_from_frames(video, fps, landmarker, bfm, face="largest"):
        seen.update(video=video, fps=fps, landmarker=landmarker, bfm=bfm, face=face)
        # an fps other than 25: the node must report the motion's own rate, not a constant
        return Motion(exp=torch.ones(20, 64), fps=30.0, euler=torch.zeros(20, 3), trans=torch.zeros(20, 3))

    monkeypatch.setattr(driving, "motion_from_frames", motion_from_frames)
    bfm = torch.nn.Module()
    face = FaceGeometry(bfm, None)
    waveform = torch.rand(1, 1, 800)
    out = bound(nodes.video_to_motion.VideoToMotion).execute(Path("lm"), face, 12.5, "1", images=frames,
                                                    audio={"waveform": waveform, "sample_rate": 1000})
    motion, audio, count, fps = out.args
    assert torch.equal(seen["video"], frames[..., :3]) and seen["fps"] == 12.5 and seen["face"] == 1
    assert seen["landmarker"] == Path("lm") and seen["bfm"] is bfm
    assert count == motion.num_frames == 20 and fps == motion.fps == 30.0
    assert torch.equal(motion.audio["waveform"], waveform) and audio is motion.audio
    with pytest.raises(Exception, match="driving video"):
        bound(nodes.video_to_motion.VideoToMotion).execute(Path("lm"), face, 25.0, "largest")


# ----------------------------------------------------------------------------------------------- camera

def test_head_pose_recipes_resolve_per_portrait(comfy):
    from r3dp_core.errors import InputError
    from r3dp_core.geometry.camera import eg3d_cameras
    from r3dp_core.pipeline.pose import POSE_MODES, PoseRecipe, resolve_pose
    from r3dp_core.pipeline.types import Motion

    camera = comfy.nodes.head_pose
    assert camera.HeadPose.define_schema().inputs[0].options == list(POSE_MODES)  # the CLI's modes, too
    src_euler, src_trans = torch.tensor([[0.1, -0.2, 0.0]]), torch.tensor([[0.0, 0.1, 0.3]])
    avatar = dataclasses.replace(_avatar(), euler=src_euler, trans=src_trans)
    static = camera.HeadPose.execute("static", 20.0, 0.0, 1.0, "", "smooth", True, True).args[0]
    assert isinstance(static, PoseRecipe) and static.mode == "static"
    pose = resolve_pose(static, avatar, Motion(exp=torch.zeros(6, 64)))
    assert torch.equal(pose.euler, src_euler.expand(6, 3)) and pose.cameras().shape == (6, 25)
    keyed = camera.HeadPose.execute("keyframes", 20.0, 0.0, 1.0, "0: 0, 0; 0.2: 10, -4", "linear", False,
                                    True).args[0]
    assert keyed.keyframes == "0: 0, 0; 0.2: 10, -4" and keyed.easing == "linear"
    pose = resolve_pose(keyed, avatar, Motion(exp=torch.zeros(8, 64)))
    expected = src_euler[0] + torch.tensor([math.radians(-4), math.radians(10), 0.0])
    assert torch.allclose(pose.euler[5], expected, atol=1e-5) and torch.allclose(pose.euler[7], expected, atol=1e-5)
    assert torch.allclose(pose.cameras(), eg3d_cameras(pose.euler, pose.trans))  # unsmoothed when asked
    orbit = camera.HeadPose.execute("orbit", 20.0, 5.0, 1.0, "", "smooth", True, True).args[0]
    assert (orbit.orbit_yaw_degrees, orbit.orbit_pitch_degrees, orbit.orbit_loops) == (20.0, 5.0, 1.0)
    assert not torch.allclose(resolve_pose(orbit, avatar, Motion(exp=torch.zeros(8, 64))).euler[2], src_euler[0])
    with pytest.raises(InputError, match="Video→3DMM"):
        camera.HeadPose.execute("driving", 20.0, 0.0, 1.0, "", "smooth", True, True, Motion(exp=torch.zeros(4, 64)))
    assert "seconds: yaw, pitch" in camera.HeadPose.validate_inputs("0: 0, 0; 1: x")
    assert camera.HeadPose.validate_inputs("0: 0, 0; 1.5: -10, 3") is True


def test_head_pose_natural_mode_strength_smoothing_and_seed(comfy):
    from r3dp_core.errors import InputError
    from r3dp_core.geometry.natural_pose import natural_head_motion
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose
    from r3dp_core.pipeline.types import Motion

    node = comfy.nodes.head_pose.HeadPose
    names = [i.id for i in node.define_schema().inputs]
    # added after the first release at the end, optional: saved graphs keep their widget positions and still run
    assert names[-4:] == ["pose_strength", "pose_smoothing", "natural_on_top", "seed"]
    assert all(i.optional and i.tooltip for i in node.define_schema().inputs[-4:])
    assert "natural" in node.define_schema().inputs[0].options
    widgets = ("natural", 20.0, 0.0, 1.0, "", "smooth", True, True)
    recipe = node.execute(*widgets, pose_strength=0.5, pose_smoothing=3, seed=11).args[0]
    assert (recipe.mode, recipe.pose_strength, recipe.pose_smoothing, recipe.seed) == ("natural", 0.5, 3, 11)
    default = node.execute(*widgets).args[0]  # a graph saved before these inputs existed
    assert (default.pose_strength, default.pose_smoothing, default.seed) == (1.0, 7, PoseRecipe.seed)
    src_euler, src_trans = torch.tensor([[0.1, -0.2, 0.0]]), torch.tensor([[0.0, 0.1, 0.3]])
    avatar = dataclasses.replace(_avatar(), euler=src_euler, trans=src_trans)
    silent_motion = Motion(exp=torch.zeros(50, 64))  # no sound: the calm drift
    pose = resolve_pose(recipe, avatar, silent_motion)
    expected = natural_head_motion(50, 25, None, seed=11, strength=0.5, base_euler=src_euler)
    assert torch.allclose(pose.euler - src_euler, expected[:, :3], atol=1e-6) and pose.smooth_kernel == 3
    assert float((pose.euler - src_euler).abs().max()) > 0
    # smooth_cameras off wins over the window (raw cameras, as pose_smoothing 1)
    assert node.execute(*widgets[:6], False, True, pose_smoothing=9).args[0].pose_smoothing == 1
    keyed = node.execute("keyframes", 20.0, 0.0, 1.0, "0: 0, 0; 1: 10, 0", "smooth", True, True,
                         natural_on_top=True, seed=4).args[0]
    assert keyed.natural_on_top and keyed.seed == 4
    with pytest.raises(InputError, match="odd number of frames"):
        node.execute(*widgets, pose_smoothing=4)


# ----------------------------------------------------------------------------------------------- streams

class _Adapter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.01))

    def forward(self, cano, src, driving):
        assert cano.shape == src.shape == driving.shape and driving.shape[1:] == (3, 512, 512)
        return self.scale * driving.mean((1, 2, 3))[:, None, None, None, None].expand(-1, 3, 4, 8, 8)


class _SuperResolution(torch.nn.Module):
    def render_frames(self, feature_image, weights, kp_driving, reference, head_threshold=None):
        batch = feature_image.shape[0]
        assert kp_driving.shape == (batch, 68, 3) and reference == "reference" and head_threshold == 0.8
        image = torch.tanh(feature_image[:, :3]).repeat_interleave(2, -1).repeat_interleave(2, -2)
        mask = weights.repeat_interleave(2, -1).repeat_interleave(2, -2)
        return SimpleNamespace(image=image, head_mask=mask, torso_mask=1 - mask, person_mask=torch.ones_like(mask))


class _VideoModel(torch.nn.Module):
    def __init__(self):
        from r3dp_core.models.decoder import OSGDecoder, OSGDecoderConfig
        from r3dp_core.render import RenderConfig

        super().__init__()
        torch.manual_seed(0)
        self.motion_adapter = _Adapter()
        self.volume_decoder = OSGDecoder(OSGDecoderConfig(in_features=4, hidden_features=8, out_features=4))
        self.htbsr = _SuperResolution()
        self.config = SimpleNamespace(render=RenderConfig(resolution=8, num_coarse_samples=4, num_fine_samples=4))
        self.references = []

    def prepare_reference(self, torso, background, segmap, kp_source):
        self.references.append((torso, background, segmap, kp_source))
        return "reference"


@pytest.fixture()
def chain(comfy):
    from r3dp_core.geometry.secc import SECCMesh
    from r3dp_core.pipeline.types import Motion
    from r3dp_core.standins import synthetic_face_model

    nodes = comfy.nodes
    bfm = synthetic_face_model(grid=8)
    face = FaceGeometry(bfm, SECCMesh(bfm.triangles, bfm.ncc_code()))
    video = nodes.loaders.VideoModel(_VideoModel(), torch.float32, "synthetic")
    exp = torch.zeros(5, 64)
    exp[:, 0] = torch.linspace(-1, 1, 5)
    audio = {"waveform": torch.zeros(1, 1, 3200), "sample_rate": 16000}
    motion = Motion(exp=exp, audio=audio)  # blink editing is core's (and slow on the CPU); wiring is tested here
    avatars = [_avatar(), dataclasses.replace(_avatar(), id=torch.full((1, 80), 0.5))]
    comfy.state.progress.clear()
    return SimpleNamespace(nodes=nodes, face=face, video=video, motion=motion, avatars=avatars)


UNLINKED = SimpleNamespace(all_node_ids=lambda: ["7", "8"], get_node=lambda i: {"inputs": {"x": ["7", 0]}})


def _stages(chain, camera=None, preview_chunk=2, dynprompt=UNLINKED):
    nodes = chain.nodes
    pncc, pncc_images = bound(nodes.pncc.PnccBuilder, dynprompt=dynprompt).execute(
        chain.motion, chain.avatars, chain.face, True, preview_chunk).args
    planes = nodes.motion_adapter.MotionAdapter.execute(chain.avatars, pncc, chain.video).args[0]
    render, raw = bound(nodes.volume_render.VolumeRender, dynprompt=dynprompt).execute(planes, 3, preview_chunk,
                                                                               camera).args
    return pncc, pncc_images, planes, render, raw


def test_stage_nodes_only_wire_lazy_sources(comfy, chain):
    from r3dp_core.pipeline.stream import PlaneSource, RenderSource, SeccSource

    pncc, pncc_images, planes, render, raw = _stages(chain)
    assert pncc_images is None and raw is None  # previews are computed only when connected
    assert [type(s) for s in pncc.sources] == [SeccSource, SeccSource]
    assert [type(s) for s in planes.sources] == [PlaneSource, PlaneSource]
    assert [type(s) for s in render.sources] == [RenderSource, RenderSource]
    assert planes.sources[0].secc is pncc.sources[0] and render.sources[1].planes is planes.sources[1]
    assert [len(p) for p in render.poses] == [5, 5] and render.model is chain.video.module
    assert comfy.state.progress == []


def test_volume_render_gives_each_portrait_its_own_natural_motion_seed(comfy, chain):
    """Two portraits under one natural Head Pose do not sway in sync; the first sways as it would alone."""
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose

    recipe = PoseRecipe(mode="natural", seed=7)
    render = _stages(chain, camera=recipe)[3]
    first, second = render.poses
    assert torch.equal(chain.avatars[0].euler, chain.avatars[1].euler)           # the same photo pose
    assert torch.equal(first.euler, resolve_pose(recipe, chain.avatars[0], chain.motion).euler)
    assert float((second.euler - first.euler).abs().max()) > 1e-4
    assert torch.equal(second.euler, resolve_pose(PoseRecipe(mode="natural", seed=8), chain.avatars[1],
                                                  chain.motion).euler)


def test_connected_previews_pull_every_frame(comfy, chain):
    linked = SimpleNamespace(all_node_ids=lambda: ["9"], get_node=lambda i: {"inputs": {"images": ["7", 1]}})
    _, pncc_images, _, _, raw = _stages(chain, dynprompt=linked)
    assert pncc_images.shape == (10, 512, 512, 3) and raw.shape == (10, 8, 8, 3)
    assert not torch.equal(pncc_images[0], pncc_images[5])  # the two identities differ
    assert [p[1] for p in comfy.state.progress if p[2] == 10] == [2, 4, 5, 7, 9, 10] * 2  # PNCC, then render


def test_composite_pulls_in_chunks_with_progress_and_lists_per_portrait(comfy, chain):
    nodes = chain.nodes
    *_, render, _ = _stages(chain)
    comfy.state.progress.clear()
    background = torch.rand(1, 30, 40, 3)
    out = bound(nodes.htbsr_composite.HtbsrComposite).execute(render, 0.8, 2, True, background)
    images, head, torso, person, audio, fps = out.args
    assert [tuple(i.shape) for i in images] == [(5, 16, 16, 3)] * 2
    assert [tuple(m.shape) for m in head] == [(5, 16, 16)] * 2 and len(torso) == len(person) == 2
    assert audio == [chain.motion.audio] * 2 and fps == [25.0, 25.0]
    assert [p[1] for p in comfy.state.progress] == [2, 4, 5, 7, 9, 10]  # chunks of 2, portrait after portrait
    assert all(p[3][0] == "JPEG" for p in comfy.state.progress)
    references = chain.video.module.references
    assert len(references) == 2 and references[0][1].shape == (1, 3, 512, 512)  # the given background, resized
    assert [p["filename"].endswith(".mp4") for p in out.ui["r3dp_video"]] == [True, True]
    preview = comfy.base / "temp" / out.ui["r3dp_video"][0]["subfolder"] / out.ui["r3dp_video"][0]["filename"]
    from r3dp_core.video_io import probe_video

    assert probe_video(preview)["frames"] == 5
    # the same frames whatever the chunk size (per-frame render noise)
    again = bound(nodes.htbsr_composite.HtbsrComposite).execute(render, 0.8, 5, False, background).args[0]
    assert torch.allclose(again[1], images[1], atol=1e-6)


def test_cancel_is_honoured_between_chunks(comfy, chain):
    nodes = chain.nodes
    *_, render, _ = _stages(chain)
    comfy.state.checks, comfy.state.interrupt_after = 0, 2
    try:
        with pytest.raises(Interrupted):
            bound(nodes.htbsr_composite.HtbsrComposite).execute(render, 0.8, 1, False)
        assert comfy.state.checks == 3
    finally:
        comfy.state.interrupt_after = None


def test_mismatched_portraits_are_refused(comfy, chain):
    from r3dp_core.errors import InputError

    pncc, *_ = _stages(chain)
    with pytest.raises(InputError, match="built for 2"):
        chain.nodes.motion_adapter.MotionAdapter.execute(chain.avatars[:1], pncc, chain.video)


# ----------------------------------------------------------------------------------------------- io nodes

def test_motion_and_avatar_round_trip_through_files(comfy):
    from r3dp_core.pipeline.types import Motion

    io = comfy.nodes.io
    audio = {"waveform": torch.rand(1, 1, 800), "sample_rate": 16000}
    motion = Motion(exp=torch.rand(6, 64), euler=torch.rand(6, 3), trans=torch.rand(6, 3), blink=torch.rand(6),
                    audio=audio)
    io.SaveMotion.execute(motion, "shared/clip", False)
    io.SaveMotion.execute(motion, "shared/clip", True)
    names = comfy.nodes._paths.saved_file_options("r3dp_motions")
    assert names == ["shared/clip_00001.safetensors", "shared/clip_00002.safetensors"]
    small, fps, frames = io.LoadMotion.execute(names[0]).args
    assert torch.equal(small.exp, motion.exp) and torch.equal(small.blink, motion.blink) and small.audio is None
    assert (fps, frames) == (25.0, 6)
    assert io.LoadMotion.execute(names[1]).args[0].audio["sample_rate"] == 16000
    assert io.LoadMotion.fingerprint_inputs(names[0]) != io.LoadMotion.fingerprint_inputs(names[1])
    avatars = [_avatar(), _avatar()]
    io.SaveAvatar.execute(avatars, "pair")
    loaded, image = io.LoadAvatar.execute("pair_00002.safetensors").args
    assert torch.equal(loaded[0].planes, avatars[1].planes) and image.shape == (1, 64, 64, 3)
    from r3dp_core.errors import ModelFileError

    with pytest.raises(ModelFileError, match="Save node"):
        io.LoadMotion.execute("nope.safetensors")


def test_load_motion_reads_official_coefficient_files(comfy):
    from r3dp_core.errors import InputError

    io = comfy.nodes.io
    folder = comfy.base / "output" / "r3dp" / "motions" / "official"
    folder.mkdir(parents=True, exist_ok=True)
    exp, euler, trans = (np.random.default_rng(0).normal(size=(7, n)).astype(np.float32) for n in (64, 3, 3))
    np.save(folder / "drv.npy", {"exp": exp, "euler": euler, "trans": trans, "id": np.zeros((7, 80), np.float32)})
    np.save(folder / "broken.npy", {"exp": np.zeros((7, 32))})
    names = comfy.nodes._paths.saved_file_options("r3dp_motions")
    assert "official/drv.npy" in names and "official/broken.npy" in names
    motion, fps, frames = io.LoadMotion.execute("official/drv.npy").args
    assert (fps, frames) == (25.0, 7) and torch.equal(motion.exp, torch.from_numpy(exp))
    assert torch.equal(motion.euler, torch.from_numpy(euler)) and torch.equal(motion.trans, torch.from_numpy(trans))
    with pytest.raises(InputError, match=r"'exp' must be \[T,64\]"):
        io.LoadMotion.execute("official/broken.npy")


def test_audio_loader_decodes_and_trims(comfy):
    import av

    from r3dp_core.errors import InputError

    rate = 8000
    samples = np.sin(np.linspace(0, 300, rate)).astype(np.float32) * 0.5
    with av.open(str(comfy.base / "input" / "tone.wav"), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    io = comfy.nodes.io
    assert "tone.wav" in io.LoadAudio.define_schema().inputs[0].options
    clip, seconds = io.LoadAudio.execute("tone.wav", 0.25, 0.5).args
    assert clip["sample_rate"] == rate and clip["waveform"].shape == (1, 1, 4000) and seconds == 0.5
    assert np.allclose(clip["waveform"][0, 0, :10].numpy(), samples[2000:2010], atol=1e-3)
    assert io.LoadAudio.validate_inputs("missing.wav").startswith("Audio file 'missing.wav'")
    with pytest.raises(InputError, match="shorter than start_seconds"):
        io.LoadAudio.execute("tone.wav", 5.0, 0.0)


def test_background_loader_modes(comfy):
    from r3dp_core.errors import InputError

    loader = comfy.nodes.background.BackgroundLoader
    solid = loader.execute("color", "#ff8000").args[0]
    assert solid.shape == (1, 512, 512, 3) and torch.allclose(solid[0, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    resized = loader.execute("image", "#000000", image=torch.rand(2, 40, 30, 3)).args[0]
    assert resized.shape == (2, 512, 512, 3)
    source = loader.execute("source", "#000000", avatar=[_avatar(), _avatar()]).args[0]
    assert source.shape == (2, 64, 64, 3)
    assert "hex colour" in loader.validate_inputs("color", "blue")
    with pytest.raises(InputError, match="avatar input"):
        loader.execute("source", "#000000")


# ----------------------------------------------------------------------------------------------- all-in-one

def test_talking_portrait_expands_into_the_stage_nodes(comfy):
    from r3dp_core.errors import InputError

    links = {"image": ["1", 0], "audio": ["2", 0], "head_mask": ["3", 0]}
    dynprompt = SimpleNamespace(get_node=lambda node_id: {"inputs": links})
    node = bound(comfy.nodes.all_in_one.TalkingPortrait, unique_id="9", dynprompt=dynprompt)
    args = dict(head_pose="orbit", mouth_amplitude=0.5, temperature=0.1, blink=False, seed=3, chunk_size=2,
                precision="fp16", video_model="v.ckpt", audio_model="a.ckpt", hubert="h", bfm="b.mat",
                landmarker="l.task", segmenter="s.tflite")
    out = node.execute(torch.rand(1, 8, 8, 3), audio={"waveform": torch.zeros(1, 1, 10), "sample_rate": 16000},
                       head_mask=torch.ones(1, 8, 8), **args)
    graph = out.expand
    types_ = {node_id.split(".")[-1]: n["class_type"] for node_id, n in graph.items()}
    assert all(node_id.startswith("9.r3dp.") for node_id in graph)
    assert types_["segmenter"] == "R3DP_SegmenterFromMasks" and "video_motion" not in types_
    registered = {cls.define_schema().node_id: cls for cls in comfy.nodes.NODE_CLASSES}
    for node_id, spec in graph.items():  # every expanded node gets exactly its schema's inputs
        schema = registered[spec["class_type"]].define_schema()
        required = {i.id for i in schema.inputs if not i.optional}
        assert required <= set(spec["inputs"]) <= {i.id for i in schema.inputs}, node_id
    assert graph["9.r3dp.avatar"]["inputs"]["image"] == ["1", 0]
    assert graph["9.r3dp.motion"]["inputs"]["audio"] == ["2", 0]
    assert graph["9.r3dp.motion"]["inputs"]["mouth_amplitude"] == 0.5
    assert graph["9.r3dp.camera"]["inputs"]["mode"] == "orbit"
    assert graph["9.r3dp.video_model"]["inputs"]["precision"] == "fp16"
    assert out.args == (["9.r3dp.composite", 0], ["9.r3dp.composite", 4], ["9.r3dp.composite", 5],
                        ["9.r3dp.composite", 3])
    with pytest.raises(InputError, match="one portrait"):
        node.execute(torch.rand(2, 8, 8, 3), audio={}, **args)
    with pytest.raises(InputError, match="voice clip"):
        node.execute(torch.rand(1, 8, 8, 3), **args)


def test_talking_portrait_starts_on_auto_and_follows_a_driving_video_there(comfy):
    """One pose-mode default everywhere (auto, as the CLI): with a driving video auto follows its pose, with speech
    alone the Head Pose node gets no motion to follow (natural motion)."""
    schema = comfy.nodes.all_in_one.TalkingPortrait.define_schema()
    head_pose = next(i for i in schema.inputs if i.id == "head_pose")
    assert head_pose.default == "auto" and "auto" in head_pose.options
    links = {"image": ["1", 0], "audio": ["2", 0], "driving_video": ["4", 0]}
    dynprompt = SimpleNamespace(get_node=lambda node_id: {"inputs": links})
    node = bound(comfy.nodes.all_in_one.TalkingPortrait, unique_id="9", dynprompt=dynprompt)
    args = dict(head_pose="auto", mouth_amplitude=0.5, temperature=0.1, blink=False, seed=3, chunk_size=2,
                precision="fp32", video_model="v.ckpt", audio_model="a.ckpt", hubert="h", bfm="b.mat",
                landmarker="l.task", segmenter="s.tflite")
    audio = {"waveform": torch.zeros(1, 1, 10), "sample_rate": 16000}
    with_video = node.execute(torch.rand(1, 8, 8, 3), audio=audio, driving_video=torch.rand(2, 8, 8, 3), **args)
    camera = with_video.expand["9.r3dp.camera"]["inputs"]
    assert camera["mode"] == "auto" and camera["motion"] == ["9.r3dp.video_motion", 0]
    speech_only = node.execute(torch.rand(1, 8, 8, 3), audio=audio, **args).expand["9.r3dp.camera"]["inputs"]
    assert speech_only["mode"] == "auto" and "motion" not in speech_only


def test_pncc_builder_passes_the_mouth_scale_to_core(comfy, chain, monkeypatch):
    from r3dp_core.pipeline import frame_chain

    gains = []
    real = frame_chain.secc_source
    monkeypatch.setattr(frame_chain, "secc_source", lambda face, avatar, motion, mouth_scale=1.0:
                        gains.append(mouth_scale) or real(face, avatar, motion, mouth_scale=1.0))
    bound(chain.nodes.pncc.PnccBuilder, dynprompt=UNLINKED).execute(chain.motion, chain.avatars, chain.face, True, 2,
                                                                      0.25)
    bound(chain.nodes.pncc.PnccBuilder, dynprompt=UNLINKED).execute(chain.motion, chain.avatars, chain.face, True, 2)
    assert gains == [0.25, 0.25, 1.0, 1.0]


def test_pncc_builder_blinks_motions_without_a_schedule_of_their_own(comfy, chain, monkeypatch):
    """A video-driven (or loaded) motion has no blinks: the builder gives it the official periodic schedule, seeded,
    as the CLI does; a motion's own schedule is kept, and blink off removes any."""
    from r3dp_core.geometry.blink import blink_schedule
    from r3dp_core.pipeline import frame_chain

    driven = []
    monkeypatch.setattr(frame_chain, "secc_source", lambda face, avatar, motion, mouth_scale=1.0:
                        driven.append(motion) or object())
    node = bound(chain.nodes.pncc.PnccBuilder, dynprompt=UNLINKED)
    assert chain.motion.blink is None  # as Video→3DMM makes it
    node.execute(chain.motion, chain.avatars[:1], chain.face, True, 2, 1.0, 9)
    official = blink_schedule(5, seed=9)
    assert torch.equal(driven[-1].blink, official.closure) and torch.equal(driven[-1].blink_edited, official.edited)
    assert float(official.closure.max()) > 0  # the schedule does close the eyes within these frames
    node.execute(chain.motion, chain.avatars[:1], chain.face, True, 2)  # default seed, as the CLI's
    assert torch.equal(driven[-1].blink, blink_schedule(5, seed=42).closure)
    own = dataclasses.replace(chain.motion, blink=torch.full((5,), 0.5))
    node.execute(own, chain.avatars[:1], chain.face, True, 2, 1.0, 9)
    assert torch.equal(driven[-1].blink, own.blink)
    node.execute(own, chain.avatars[:1], chain.face, False, 2, 1.0, 9)
    assert driven[-1].blink is None and driven[-1].blink_edited is None


def test_audio_loader_refuses_bad_files_with_the_clis_messages(comfy):
    import av

    from r3dp_core.audio.io import load_audio
    from r3dp_core.errors import InputError

    folder = comfy.base / "input"
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("not audio at all\n" * 20)
    with av.open(str(folder / "broken_float.wav"), mode="w") as container:
        stream = container.add_stream("pcm_f32le", rate=16000)
        stream.layout = "mono"
        samples = np.zeros((1, 1600), np.float32)
        samples[0, 100] = np.nan
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    for name, problem in (("empty.wav", "empty"), ("notes.wav", "not a readable audio file"),
                          ("broken_float.wav", "NaN or infinite samples")):
        with pytest.raises(InputError) as from_cli:
            load_audio(folder / name)
        with pytest.raises(InputError) as from_node:
            comfy.nodes.io.LoadAudio.execute(name)
        assert str(from_node.value) == str(from_cli.value)
        assert str(from_node.value).startswith(str(folder / name)) and problem in str(from_node.value)


def test_image_to_triplane_names_the_portrait_without_a_face(comfy, monkeypatch):
    from r3dp_core.errors import InputError
    from r3dp_core.geometry.landmarks import NO_FACE_ADVICE
    from r3dp_core.pipeline import stages

    def prepare_source(image, kit, **_):
        if image.mean() > 100:
            raise InputError(f"No face found in the photo. {NO_FACE_ADVICE}")
        return _avatar(planes=False)

    monkeypatch.setattr(stages, "prepare_source", prepare_source)
    video = comfy.nodes.loaders.VideoModel(torch.nn.Linear(2, 2), torch.float32, "v")
    face = FaceGeometry(torch.nn.Module(), None)
    image = torch.cat([torch.ones(1, 32, 32, 3), torch.zeros(1, 32, 32, 3)])
    with pytest.raises(InputError) as error:
        bound(comfy.nodes.image_to_triplane.ImageToTriplane).execute(image, video, face, Path("lm.task"),
                                                          comfy.nodes.loaders.Segmenter(path=Path("s")), 0.2, "largest")
    assert str(error.value) == f"Image→Triplane, portrait 1 of 2: No face found in the photo. {NO_FACE_ADVICE}"


# ----------------------------------------------------------------------------------------------- paste back

def test_paste_back_node_chains_two_people(comfy):
    """Two avatars of one photo: the second Paste Back pastes into the first's output."""
    from r3dp_core.errors import InputError

    node = bound(comfy.nodes.paste_back.PasteBack)
    comfy.state.progress.clear()
    photo = np.random.default_rng(4).integers(0, 256, (100, 240, 3), dtype=np.uint8)
    segmap = torch.zeros(1, 6, 64, 64)
    segmap[:, 0] = 1
    first, second = (dataclasses.replace(_avatar(), segmap=segmap, photo=torch.from_numpy(photo),
                                         photo_square=torch.tensor([left, 0, 100])) for left in (0, 140))
    clip = torch.full((3, 64, 64, 3), 0.2)
    person = torch.zeros(3, 64, 64)
    person[:, 16:48, 20:44] = 1
    one, one_mask = node.execute([clip], [[first]], [16], person_mask=[person]).args
    assert one[0].shape == (3, 100, 240, 3) and one_mask[0].shape == (3, 100, 240)
    reference = torch.from_numpy(photo).float()[None] / 255
    assert torch.equal(one[0][:, :, 100:], reference.expand(3, -1, -1, -1)[:, :, 100:])  # right half untouched
    two, two_mask = node.execute([torch.full((2, 64, 64, 3), 0.9)], [[second]], [16], person_mask=[person[:2]],
                                 background_frames=one).args
    assert two[0].shape == (3, 100, 240, 3)  # the longer clip's length; the shorter holds its last frame
    assert torch.equal(two[0][:, :, :140], one[0][:, :, :140])        # person 1 kept exactly
    assert bool((two_mask[0][:, :, 140:] > 0).any()) and not bool(two_mask[0][:, :, :140].any())
    assert float(two[0][2][two_mask[0][2] == 1].mean()) == pytest.approx(0.9, abs=1e-5)
    assert [p[1:3] for p in comfy.state.progress] == [(3, 3), (3, 3)] and comfy.state.progress[0][3][0] == "JPEG"
    with pytest.raises(InputError, match="background_frames are 50x50"):
        node.execute([clip], [[first]], [16], background_frames=[torch.rand(1, 50, 50, 3)])
    with pytest.raises(InputError, match="2 clip\\(s\\) but 3 avatar"):
        node.execute([clip, clip], [[first, first, second]], [16])


def _two_people_of_one_photo():
    """A smooth 100x240 photo (so the codec's error is small), two avatars of it and a clip + person mask each."""
    rows, cols = np.mgrid[0:100, 0:240]
    photo = np.stack([cols * 255 // 240, rows * 255 // 100, np.full_like(cols, 90)], -1).astype(np.uint8)
    segmap = torch.zeros(1, 6, 64, 64)
    segmap[:, 0] = 1
    first, second = (dataclasses.replace(_avatar(), segmap=segmap, photo=torch.from_numpy(photo),
                                         photo_square=torch.tensor([left, 0, 100])) for left in (0, 140))
    person = torch.zeros(5, 64, 64)
    person[:, 16:48, 20:44] = 1
    clip_a = torch.linspace(0.1, 0.3, 2)[:, None, None, None].expand(2, 64, 64, 3).contiguous()
    clip_b = torch.linspace(0.9, 0.6, 5)[:, None, None, None].expand(5, 64, 64, 3).contiguous()
    return first, second, (clip_a, person[:2]), (clip_b, person)


def test_paste_back_stream_saves_the_image_paths_frames_chunk_by_chunk(comfy, monkeypatch):
    """Paste Back (stream) ×2 → Save Video (r3dp): the frames handed to the encoder are exactly the IMAGE path's
    (chained Paste Back) converted to uint8, the mp4 in the output folder decodes to them within the codec's error,
    with the audio muxed; progress per chunk, Cancel between chunks leaves no file."""
    from r3dp_core.images import unit_to_uint8
    from r3dp_core.pipeline.paste_back import ClipPasteSource
    from r3dp_core.video_io import VideoWriter, probe_video, read_video_frames

    paste_back = comfy.nodes.paste_back
    first, second, (clip_a, person_a), (clip_b, person_b) = _two_people_of_one_photo()
    # IMAGE path: person 1 (2 frames), person 2 (5 frames) pasted into person 1's frames (held on its last frame)
    one = bound(paste_back.PasteBack).execute([clip_a], [[first]], [16], person_mask=[person_a]).args[0]
    two = bound(paste_back.PasteBack).execute([clip_b], [[second]], [16], person_mask=[person_b],
                                              background_frames=one).args[0][0]
    # stream path: nothing is pasted until Save Video pulls
    pulled = []
    original_chunk = ClipPasteSource.chunk
    monkeypatch.setattr(ClipPasteSource, "chunk",
                        lambda self, start, stop, trace=None: pulled.append((start, stop)) or original_chunk(
                            self, start, stop, trace))
    stream_a = paste_back.PasteBackStream.execute([clip_a], [[first]], [16], person_mask=[person_a]).args[0]
    stream_b = paste_back.PasteBackStream.execute([clip_b], [[second]], [16], person_mask=[person_b],
                                                  background=stream_a).args[0]
    assert len(stream_b) == 1 and stream_b[0].num_frames == 5 and pulled == []
    written = []
    original_write = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, frames: written.append(frames.copy()) or original_write(
        self, frames))
    rate = 16000
    audio = {"waveform": 0.1 * torch.sin(torch.arange(int(0.2 * rate)) / rate * 2 * math.pi * 220)[None, None],
             "sample_rate": rate}
    comfy.state.progress.clear()
    save = bound(paste_back.SaveVideo, unique_id="9")
    out = save.execute(stream_b[0], 25.0, "r3dp/stream_test", 2, audio=audio)
    assert out.args == () and out.ui["animated"] == (True,)
    assert out.ui["images"] == [{"filename": "stream_test_00001_.mp4", "subfolder": "r3dp", "type": "output"}]
    # chunks of 2: person 2's chunk 2:4 and 4:5 paste into person 1's held last frame (pulled once)
    assert [len(w) for w in written] == [2, 2, 1]
    assert pulled.count((1, 2)) == 1 and (0, 2) in pulled
    assert np.array_equal(np.concatenate(written), unit_to_uint8(two).numpy())          # exactly, before encoding
    path = comfy.base / "output" / "r3dp" / "stream_test_00001_.mp4"
    decoded = np.concatenate([frames for frames, _ in read_video_frames(path)]).astype(np.float32)
    assert decoded.shape == (5, 100, 240, 3)
    error = np.abs(decoded - unit_to_uint8(two).numpy())
    assert float(error.mean()) < 2.5 and float(np.percentile(error, 99)) <= 12, (error.mean(), error.max())  # yuv420
    info = probe_video(path)
    assert info["fps"] == 25 and info["audio_seconds"] == pytest.approx(0.2, abs=0.03)
    assert [p[:3] for p in comfy.state.progress] == [("9", 2, 5), ("9", 4, 5), ("9", 5, 5)]
    assert all(p[3][0] == "JPEG" for p in comfy.state.progress)
    # Cancel between chunks: no file, no partial file; the next save takes the next number
    comfy.state.checks, comfy.state.interrupt_after = 0, 1
    try:
        with pytest.raises(Interrupted):
            save.execute(stream_b[0], 25.0, "r3dp/stream_test", 2)
    finally:
        comfy.state.interrupt_after = None
    assert sorted(p.name for p in path.parent.iterdir() if "stream_test" in p.name) == ["stream_test_00001_.mp4"]
    again = save.execute(stream_b[0], 25.0, "r3dp/stream_test", 4).ui["images"][0]["filename"]
    assert again == "stream_test_00002_.mp4"
    from r3dp_core.errors import InputError

    with pytest.raises(InputError, match="Paste Back \\(stream\\)"):
        save.execute(two, 25.0, "r3dp/stream_test", 4)
