"""Persona nodes (Talk3D): a person's personalised model in the graph, driven by any speech, seen from any view and put
back into its own training video; and the Personalise node that trains one.

Thin adapters over ``r3dp_core.talk3d.animate`` (``load_persona_model``, ``drive_from_speech``, ``persona_cameras``,
``persona_frames``, ``paste_into_source``) and ``r3dp_core.talk3d.personalise.run.personalise``. The values on the
edges are small: the drive holds per-frame tokens, never tri-planes; the tri-plane deltas, renders and pasted frames
are made chunk by chunk by the node that pulls them (Persona Super-Resolution, Save Video (r3dp)).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from r3dp_core.errors import InputError

from . import _paths
from . import _types as t
from ._api import comfy_io, comfy_ui

FPS = 25.0
BLINK_MODES = ["schedule", "replay", "none"]
HEAD_TOKEN_MODES = ["neutral", "replay"]
PRESETS = ["full", "fast", "tiny"]
PERSONA_CHUNK = 8


@dataclass
class Wav2Vec2:
    """Talk3D's speech model (``Wav2Vec2ForCTC``) and the folder it came from (its stream config)."""

    module: torch.nn.Module
    folder: Path


@dataclass
class PersonaPlanes:
    """The R3DP_PERSONA_PLANES value: a persona and its drive (``PersonaDrive``: per-frame tokens of one speech and
    the training frames they replay). The tri-plane deltas are computed chunk by chunk when the render is pulled."""

    persona: Any
    drive: Any

    @property
    def num_frames(self) -> int:
        return int(self.drive.source_frames.shape[0])


@dataclass
class PersonaRender:
    """Volume Render's R3DP_RENDER for a persona: the frames of ``planes`` under ``yaw_pitch`` ``[N,2]``, rendered
    (ΔP, volume rendering and the persona's super-resolution) chunk by chunk by :meth:`frames`."""

    planes: PersonaPlanes
    yaw_pitch: torch.Tensor
    replayed: bool                      # the training video's cameras (what paste-back needs)
    seed: int
    sound: Any = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return self.planes.num_frames

    def frames(self, chunk: int, host) -> Iterator[torch.Tensor]:
        from r3dp_core.talk3d.animate import persona_frames

        return persona_frames(self.planes.persona, self.planes.drive, self.yaw_pitch, seed=self.seed, chunk=chunk,
                              host=host)


def _video_path(video, what: str) -> Path | None:
    """A ComfyUI VIDEO (or None) → a file path: its own file when it was loaded from one, else written to the temp
    folder."""
    if video is None:
        return None
    source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
    if isinstance(source, (str, Path)):
        return Path(source)
    from ._runtime import temp_file

    path, _, _ = temp_file(".mp4")
    video.save_to(path)
    return Path(path)


def persona_render(planes: PersonaPlanes, camera, seed: int) -> PersonaRender:
    """Volume Render's persona branch: Head Pose's recipe (``persona_head_pose``: replay/auto → the training
    cameras; static, orbit, keyframes, natural about the persona's resting camera) or, unconnected, the training
    cameras → yaw/pitch ``[N,2]``."""
    from r3dp_core.pipeline.persona import persona_head_pose
    from r3dp_core.talk3d.animate import persona_cameras

    pose = "replay" if camera is None else persona_head_pose(camera, planes.persona, planes.drive)
    replayed = isinstance(pose, str) and pose == "replay"
    yaw_pitch = persona_cameras(planes.persona, planes.drive, pose)
    return PersonaRender(planes, yaw_pitch, replayed, seed, planes.drive.sound)


# --------------------------------------------------------------------------------------------------- loaders

class PersonaLoader(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PersonaLoader",
            display_name="Persona Loader",
            category=f"{t.CATEGORY}/persona",
            description="Loads a persona (a person's personalised Talk3D model: generator, identity tri-plane, U-Net, "
                        "encoders, super-resolution, and the training video's cameras, tokens and face alignment) "
                        "from models/real3dportrait/personas/NAME or a 'real3dportrait' folder of "
                        "extra_model_paths.yaml. Train one with the Personalise node or `r3dp personalise`.",
            inputs=[
                comfy_io.Combo.Input("persona", options=_paths.persona_options(),
                                     tooltip="A folder in real3dportrait/personas/ holding persona.json; press R "
                                             "after training a new one."),
            ],
            outputs=[t.Persona.Output(display_name="persona"),
                     comfy_io.Int.Output(display_name="training_frames",
                                         tooltip="Frames of the training video (25 fps) the persona replays.")],
        )

    @classmethod
    def execute(cls, persona: str):
        from r3dp_core.talk3d.animate import load_persona_model

        from ._runtime import offload_device

        model = load_persona_model(_paths.resolve_persona(persona), device=offload_device())
        return comfy_io.NodeOutput(model, model.num_frames)

    @classmethod
    def fingerprint_inputs(cls, persona: str):
        folder = _paths.resolve_persona(persona)
        return f"{folder}:{(folder / 'persona.json').stat().st_mtime_ns}"


class LoadWav2Vec2(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadWav2Vec2",
            display_name="Load wav2vec2 (Talk3D)",
            category=f"{t.CATEGORY}/loaders",
            description="Loads Talk3D's speech model (cpierse/wav2vec2-large-xlsr-53-esperanto, a transformers "
                        "folder) for Persona Audio → Tri-plane. Nothing is downloaded: `r3dp models fetch --talk3d` "
                        "fills the folder.",
            inputs=[
                comfy_io.Combo.Input("model_folder", options=_paths.folder_options("wav2vec2"),
                                     tooltip="A folder with config.json and the weights, e.g. "
                                             "wav2vec2/wav2vec2-large-xlsr-53-esperanto inside models/real3dportrait."),
            ],
            outputs=[t.Wav2Vec2.Output(display_name="wav2vec2")],
        )

    @classmethod
    def execute(cls, model_folder: str):
        from r3dp_core.talk3d.audio_features import load_wav2vec2_folder

        from ._runtime import offload_device

        folder = _paths.resolve_model_folder("wav2vec2", model_folder)
        module = load_wav2vec2_folder(folder).requires_grad_(False).to(offload_device())
        return comfy_io.NodeOutput(Wav2Vec2(module, folder))


# --------------------------------------------------------------------------------------------------- drive

class PersonaAudioToTriplane(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PersonaAudioToTriplane",
            display_name="Persona Audio → Tri-plane",
            category=f"{t.CATEGORY}/persona",
            description="Drives a persona with any speech: round(25 × seconds) frames of tokens (speech windows, "
                        "blink, head rotation/position) that Volume Render turns into tri-plane deltas chunk by chunk "
                        "(never the whole clip's tri-planes at once). Each output frame replays a training frame "
                        "(forward, then backward when the speech is longer than the training video).",
            inputs=[
                t.Persona.Input("persona", tooltip="From Persona Loader or Personalise."),
                comfy_io.Audio.Input("audio", tooltip="The new speech (any AUDIO: Load Audio (r3dp), core audio nodes, "
                                                      "VideoHelperSuite)."),
                t.Wav2Vec2.Input("wav2vec2", tooltip="From Load wav2vec2 (Talk3D)."),
                comfy_io.Combo.Input("blink", options=BLINK_MODES, default="schedule",
                                     tooltip="schedule: r3dp's own seeded blink schedule · replay: the blinks of the "
                                             "replayed training frames · none: eyes open."),
                comfy_io.Combo.Input("head_tokens", options=HEAD_TOKEN_MODES, default="replay",
                                     tooltip="Head rotation/position tokens: replay (those of the replayed training "
                                             "frames; needed to paste back into the training video) or neutral (the "
                                             "training video's mean, a calmer head for the crop output)."),
                comfy_io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                                   tooltip="Seed of the blink schedule and of the render (the same seed gives the "
                                           "same frames as `r3dp generate --persona --seed`)."),
            ],
            outputs=[t.PersonaPlanes.Output(display_name="persona_planes",
                                            tooltip="For Volume Render (and Persona Paste Back)."),
                     comfy_io.Audio.Output(display_name="audio", tooltip="The speech, as it will be muxed."),
                     comfy_io.Float.Output(display_name="fps"),
                     comfy_io.Int.Output(display_name="frames")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, persona, audio, wav2vec2: Wav2Vec2, blink: str, head_tokens: str, seed: int):
        from r3dp_core.talk3d.animate import drive_from_speech
        from r3dp_core.talk3d.audio_features import stream_config_for

        from ._audio import materialise_audio
        from ._runtime import on_compute_device

        sound = materialise_audio(audio)
        with on_compute_device(wav2vec2.module):
            drive = drive_from_speech(persona, sound, wav2vec2.module, blink=blink, head_tokens=head_tokens,
                                      seed=seed, stream_config=stream_config_for(wav2vec2.folder))
        planes = PersonaPlanes(persona, drive)
        return comfy_io.NodeOutput(planes, drive.sound, FPS, planes.num_frames)


# --------------------------------------------------------------------------------------------------- frames

class PersonaSuperResolution(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PersonaSuperResolution",
            display_name="Persona Super-Resolution",
            category=f"{t.CATEGORY}/persona",
            description="The persona's frames: ΔP, volume rendering and the persona's own (fine-tuned) EG3D "
                        "super-resolution, chunk by chunk (progress with preview, Cancel between chunks) → the "
                        "aligned 512² crop as IMAGE frames (64² for a tiny test persona). For long clips pasted "
                        "into the training video use Persona Paste Back (stream) instead: it never holds the clip.",
            inputs=[
                t.Render.Input("render", tooltip="From Volume Render fed by Persona Audio → Tri-plane."),
                comfy_io.Int.Input("chunk_size", default=PERSONA_CHUNK, min=1, max=256,
                                   tooltip="Frames rendered together (lower it if the GPU runs out of memory)."),
                comfy_io.Boolean.Input("preview", default=True,
                                       tooltip="Play the result (with its audio) inside this node when done."),
            ],
            outputs=[comfy_io.Image.Output(display_name="images", tooltip="[T,S,S,3] frames of the aligned crop."),
                     comfy_io.Audio.Output(display_name="audio"),
                     comfy_io.Float.Output(display_name="fps")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, render, chunk_size: int, preview: bool):
        from ._runtime import node_host, write_preview_video

        render = _persona_render(render, "Persona Super-Resolution")
        images = render_images(render, chunk_size, node_host(cls.hidden.unique_id))
        ui = {"r3dp_video": [write_preview_video(images, FPS, render.sound)]} if preview and len(images) else None
        return comfy_io.NodeOutput(images, render.sound, FPS, ui=ui)


def render_images(render: PersonaRender, chunk: int, host) -> torch.Tensor:
    """Every frame of a persona render as one IMAGE batch ``[T,S,S,3]``, pulled chunk by chunk through ``host``."""
    from r3dp_core.images import to_comfy_image

    chunks = [to_comfy_image(frames.float().cpu()) for frames in render.frames(chunk, host)]
    size = int(render.planes.persona.image_size)
    return torch.cat(chunks) if chunks else torch.zeros(0, size, size, 3)


def persona_preview(node_cls, slot: int, render: PersonaRender, chunk: int) -> torch.Tensor | None:
    """Volume Render's raw_rgb output for a persona: its frames, computed only when that output is connected."""
    from ._runtime import node_host
    from ._stream import output_is_linked

    if not output_is_linked(node_cls, slot):
        return None
    return render_images(render, chunk, node_host(node_cls.hidden.unique_id))


def _persona_render(render, node: str) -> PersonaRender:
    if not isinstance(render, PersonaRender):
        raise InputError(f"{node} renders personas: connect a Volume Render fed by Persona Audio → Tri-plane (a "
                         "photo's render goes to HTB-SR Composite).")
    return render


_VIDEO_TOOLTIP = ("The persona's training video, when it is no longer where the persona says (checked by its "
                  "sha256). Unconnected: the path the persona stores.")


class PersonaPasteBack(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PersonaPasteBack",
            display_name="Persona Paste Back",
            category=f"{t.CATEGORY}/persona",
            description="Puts the persona's aligned frames back into its training video: each output frame into the "
                        "training frame it replays (forward, then backward when the speech is longer), through the "
                        "inverse of the face alignment and a feathered face mask. The frames must be rendered with the "
                        "training cameras (Volume Render's camera unconnected) and replayed head tokens, or the face "
                        "would not line up with the recorded neck and hair. Holds the clip at the video's resolution; "
                        "for long clips use Persona Paste Back (stream) → Save Video (r3dp).",
            inputs=[
                comfy_io.Image.Input("images", tooltip="The frames of Persona Super-Resolution."),
                t.PersonaPlanes.Input("persona_planes",
                                      tooltip="The Persona Audio → Tri-plane output the frames were rendered from (it "
                                              "says which training frame each one replays)."),
                comfy_io.Video.Input("video", optional=True, tooltip=_VIDEO_TOOLTIP),
            ],
            outputs=[comfy_io.Image.Output(display_name="images",
                                           tooltip="Frames of the training video with the new speech's face.")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, persona_planes: PersonaPlanes, video=None):
        from ._runtime import node_host

        planes = persona_planes
        if images.shape[0] != planes.num_frames:
            raise InputError(f"Persona Paste Back: {images.shape[0]} frames for a drive of {planes.num_frames}; "
                             "connect the frames rendered from this persona_planes.")
        source = planes.persona.source_video(_video_path(video, "video"))
        host = node_host(cls.hidden.unique_id)
        chunks = (images[i:i + PERSONA_CHUNK].permute(0, 3, 1, 2).float() * 2 - 1
                  for i in range(0, images.shape[0], PERSONA_CHUNK))
        pasted, done = [], 0
        for frames in _paste(planes, chunks, source, host):
            pasted.append(torch.from_numpy(frames).float().div_(255))
            done += frames.shape[0]
            host.report(done, planes.num_frames, pasted[-1][-1])
        return comfy_io.NodeOutput(torch.cat(pasted))


def _paste(planes: PersonaPlanes, frames: Iterator[torch.Tensor], source: Path, host) -> Iterator:
    from r3dp_core.talk3d.animate import paste_into_source

    return paste_into_source(planes.persona, planes.drive, frames, source, host=host)


@dataclass
class PersonaPasteSource:
    """Persona Paste Back (stream)'s R3DP_FRAMES: pasted frames made only when Save Video (r3dp) pulls them."""

    render: PersonaRender
    video: Path
    width: int
    height: int

    @property
    def num_frames(self) -> int:
        return self.render.num_frames

    def chunks(self, chunk: int, host) -> Iterator:
        """uint8 ``[B,H,W,3]`` chunks of pasted frames, rendered and pasted as they are read."""
        return _paste(self.render.planes, self.render.frames(chunk, host), self.video, host)


class PersonaPasteBackStream(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PersonaPasteBackStream",
            display_name="Persona Paste Back (stream)",
            category=f"{t.CATEGORY}/persona",
            description="As Persona Paste Back, for long clips: nothing is rendered or pasted here; Save Video (r3dp) "
                        "renders, pastes and encodes chunk by chunk, so memory stays flat however long the speech. "
                        "Paste-back replays the training cameras: leave Volume Render's camera unconnected.",
            inputs=[
                t.Render.Input("render", tooltip="From Volume Render fed by Persona Audio → Tri-plane, with its camera "
                                                 "unconnected (the training video's cameras)."),
                comfy_io.Video.Input("video", optional=True, tooltip=_VIDEO_TOOLTIP),
            ],
            outputs=[t.Frames.Output(display_name="frames", tooltip="For Save Video (r3dp).")],
        )

    @classmethod
    def execute(cls, render, video=None):
        from r3dp_core.video_io import probe_video

        render = _persona_render(render, "Persona Paste Back (stream)")
        if not render.replayed:
            raise InputError("Persona Paste Back replays the training video's cameras: disconnect Volume Render's "
                             "camera (other camera paths are for the crop, Persona Super-Resolution).")
        source = render.planes.persona.source_video(_video_path(video, "video"))
        info = probe_video(source)
        return comfy_io.NodeOutput(PersonaPasteSource(render, source, int(info["width"]), int(info["height"])))


def write_persona_video(source: PersonaPasteSource, path, fps: float, audio, *, chunk_size: int, host) -> None:
    """Save Video (r3dp)'s persona branch: render, paste and encode chunk by chunk into an mp4 that appears only when
    complete (``VideoWriter``)."""
    from r3dp_core.video_io import VideoWriter

    even_h, even_w = source.height // 2 * 2, source.width // 2 * 2
    done = 0
    with VideoWriter(path, fps=fps, audio=audio) as writer:
        for frames in source.chunks(chunk_size, host):
            writer.write(frames[:, :even_h, :even_w])
            done += frames.shape[0]
            host.report(done, source.num_frames, torch.from_numpy(frames[-1]).float().div_(255))


# --------------------------------------------------------------------------------------------------- training

class Personalise(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_Personalise",
            display_name="Personalise (train a persona)",
            category=f"{t.CATEGORY}/persona",
            description="Trains a persona from a talking video of one person (`r3dp personalise`) into "
                        "models/real3dportrait/personas/NAME, with the progress bar, the held-out previews and Cancel "
                        "(the checkpoint is saved; run again to continue). Training takes hours on the full preset "
                        "and holds ComfyUI's queue meanwhile: the CLI is the better place for long runs. Only train on "
                        "video of someone who agreed to it.",
            inputs=[
                comfy_io.String.Input("name", default="my_persona",
                                      tooltip="The persona's folder name in models/real3dportrait/personas/."),
                comfy_io.Combo.Input("preset", options=PRESETS, default="full",
                                     tooltip="full: the official recipe (hours) · fast: shorter, lower quality · tiny: "
                                             "the test-sized architecture (seconds; stand-in models)."),
                comfy_io.Int.Input("steps", default=0, min=0, max=1_000_000,
                                   tooltip="Total U-Net steps (0 = the preset's). Raise it and run again to train "
                                           "further from the saved checkpoint."),
                comfy_io.Int.Input("save_every", default=0, min=0, max=1_000_000,
                                   tooltip="Checkpoint and preview every this many steps (0 = the preset's)."),
                comfy_io.Float.Input("start_seconds", default=0.0, min=0.0, max=36000.0, step=0.1,
                                     tooltip="Train on the video from here."),
                comfy_io.Float.Input("end_seconds", default=0.0, min=0.0, max=36000.0, step=0.1,
                                     tooltip="... to here (0 = to the end)."),
                comfy_io.String.Input("face", default="",
                                      tooltip="Which face when the video shows several (0 = leftmost, 1, ...); empty "
                                              "refuses such a video."),
                comfy_io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                                   tooltip="Seed of the training (same seed, same persona)."),
                comfy_io.Boolean.Input("restart", default=False,
                                       tooltip="Start over instead of continuing a persona of this name (needed to "
                                               "train it from another video or preset)."),
                comfy_io.Video.Input("video", optional=True,
                                     tooltip="The talking video (Load Video). Or give video_path."),
                comfy_io.String.Input("video_path", default="", optional=True,
                                      tooltip="Instead of the video input: a video file, absolute or in ComfyUI's "
                                              "input folder."),
            ],
            outputs=[t.Persona.Output(display_name="persona"),
                     comfy_io.String.Output(display_name="persona_folder")],
            hidden=[comfy_io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, name: str, preset: str, steps: int, save_every: int, start_seconds: float, end_seconds: float,
                face: str, seed: int, restart: bool, video=None, video_path: str = ""):
        from r3dp_core.talk3d.animate import load_persona_model
        from r3dp_core.talk3d.personalise.run import PersonaliseOptions, personalise
        from r3dp_core.talk3d.personalise.training import TrainingInterrupted

        from ._runtime import compute_device, offload_device

        source = _training_video(video, video_path)
        folder = _paths.persona_target(name)
        face_value = face.strip()
        options = PersonaliseOptions(
            video=source, out=folder, preset=preset, steps=steps or None, save_every=save_every or None,
            start=start_seconds or None, end=end_seconds or None,
            face=int(face_value) if face_value.isdigit() else (face_value or None),
            models_dir=_paths.models_dir_with("eg3d_ffhq"), device=str(compute_device()), restart=restart,
            seed=seed)
        messages: list[str] = []
        try:
            # ComfyUI runs nodes in inference mode without gradients; training needs both
            with torch.inference_mode(False), torch.enable_grad():
                result = personalise(options, host=_training_host(cls.hidden.unique_id, folder), say=messages.append)
        except TrainingInterrupted as stopped:
            raise stopped.cause from stopped   # ComfyUI's own interrupt: the queue shows it as cancelled
        model = load_persona_model(result.folder, device=offload_device())
        summary = f"persona {name}: U-Net step {result.step}" + (
            f" (resumed from {result.resumed_from})" if result.resumed_from is not None else "")
        text = "\n".join([summary, *(m for m in messages if len(m) < 400)])
        return comfy_io.NodeOutput(model, str(result.folder), ui=comfy_ui.PreviewText(text))

    @classmethod
    def validate_inputs(cls, name: str):
        try:
            _paths.check_persona_name(name)
        except Exception as exc:  # noqa: BLE001 - the message is the answer
            return str(exc)
        return True


def _training_video(video, video_path: str) -> Path:
    import folder_paths

    path = _video_path(video, "video")
    if path is None and video_path.strip():
        given = Path(video_path.strip()).expanduser()
        path = given if given.is_absolute() else Path(folder_paths.get_annotated_filepath(video_path.strip()))
    if path is None:
        raise InputError("Personalise needs the talking video: connect Load Video or give video_path.")
    if not path.is_file():
        raise InputError(f"Personalise: {path} is not a file.")
    return path


def _training_host(node_id, folder: Path):
    """The node's host, with the newest held-out preview of the persona folder (``previews/step_*.png``) shown in
    the node whenever training writes one."""
    import dataclasses

    from ._runtime import node_host

    base = node_host(node_id)
    shown: list[str] = []

    def progress(done: int, total: int, preview: torch.Tensor | None = None) -> None:
        if preview is None:
            newest = max((folder / "previews").glob("step_*.png"), default=None)
            if newest is not None and [newest.name] != shown:
                shown[:] = [newest.name]
                preview = _read_png(newest)
        base.report(done, total, preview)

    return dataclasses.replace(base, progress=progress)


def _read_png(path: Path) -> torch.Tensor | None:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).float().div_(255)
    except OSError:
        return None


NODES = [PersonaLoader, LoadWav2Vec2, PersonaAudioToTriplane, PersonaSuperResolution, PersonaPasteBack,
         PersonaPasteBackStream, Personalise]
