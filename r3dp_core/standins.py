"""Self-contained stand-ins for the model files and inputs of a job: the tiny video model, a one-layer HuBERT,
a dome-shaped BFM (in memory, or written in the official formats with its MediaPipe index and eye triangles), a
portrait-shaped test card, a stand-in landmark layout with its head/body masks, a test tone and a wav writer; for
Talk3D's ``personalise``, the tiny EG3D generator and a miniature wav2vec2 (:func:`write_talk3d_models`) and a
synthetic talking video made from a face photo and speech (:func:`write_talking_video`).

``r3dp doctor --selftest`` (``pipeline/selftest.py``) fills a temporary models folder with these; the tests and the
benchmarks use them too. Nothing here reads the shared reference folder or downloads anything: the stand-ins that
need ``../shared`` (the parity manifests' weights, the synthetic-BFM recipe, the shared clips) live with the parity
harness (``parity/synthetic_job.py``). The pictures such models make are meaningless; every loader reads them.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from . import model_files
from .geometry.bfm import FaceModel3DMM
from .geometry.landmarks import NUM_LANDMARKS
from .pipeline.types import Avatar

DOME_GRID = 48


def synthetic_face_model(grid: int = 48, seed: int = 0) -> FaceModel3DMM:
    """A dome-shaped stand-in for the BFM: a grid mesh with random identity/expression bases."""
    generator = torch.Generator().manual_seed(seed)
    u, v = torch.meshgrid(torch.linspace(-1, 1, grid), torch.linspace(-1, 1, grid), indexing="ij")
    depth = (1 - (u**2 + v**2).clamp(max=1)).sqrt()
    mean_shape = torch.stack([0.75 * v, -1.0 * u, 0.55 * depth], dim=-1).reshape(-1, 3)
    n = mean_shape.shape[0]
    ids = torch.arange(n).reshape(grid, grid)
    quads = torch.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], dim=-1).reshape(-1, 4)
    triangles = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return FaceModel3DMM(mean_shape=mean_shape - mean_shape.mean(0),
                         id_base=0.01 * torch.randn(3 * n, 80, generator=generator),
                         exp_base=0.01 * torch.randn(3 * n, 64, generator=generator),
                         triangles=triangles,
                         keypoints68=torch.randint(1, n, (68,), generator=generator),
                         mp468_index=torch.randint(0, n, (468,), generator=generator))


def synthetic_avatar(size: int = 512) -> Avatar:
    """A portrait-shaped test card: head ellipse, shoulders, gradient background."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    head = (x / 0.35) ** 2 + ((y + 0.2) / 0.45) ** 2 < 1
    body = (y > 0.45) & (x.abs() < 0.8)
    image = torch.stack([x, y, x * y], 0).unsqueeze(0) * 0.5
    labels = torch.zeros(size, size, dtype=torch.long)
    labels[body] = 4
    labels[head] = 3
    segmap = torch.nn.functional.one_hot(labels, 6).permute(2, 0, 1).float()[None]
    zero3 = torch.zeros(1, 3)
    return Avatar(image=image, id=torch.zeros(1, 80), exp=torch.zeros(1, 64), euler=zero3, trans=zero3.clone(),
                  head_image=torch.where(head, image, -1.0), torso_image=torch.where(body, image, -1.0),
                  background=image.flip(-1), segmap=segmap)


def _dome_vertices(grid: int = DOME_GRID) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in face: a dome over a ``grid``² lattice (x right, y up, z out, ±0.75 × ±1 units) and its
    triangles (0-based)."""
    u, v = np.meshgrid(np.linspace(-1, 1, grid), np.linspace(-1, 1, grid), indexing="ij")
    depth = np.sqrt(np.clip(1 - (u**2 + v**2), 0, None))
    vertices = np.stack([0.75 * v, -1.0 * u, 0.55 * depth], axis=-1).reshape(-1, 3)
    ids = np.arange(grid * grid).reshape(grid, grid)
    quads = np.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], axis=-1).reshape(-1, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return vertices - vertices.mean(0), triangles


def standin_face_layout() -> np.ndarray:
    """478 landmark positions (normalised image coordinates) of the stand-in landmarker: a sunflower pattern
    filling an ellipse in the middle of the photo, a quarter of its area (no crop is needed)."""
    index = np.arange(NUM_LANDMARKS) + 0.5
    radius = np.sqrt(index / NUM_LANDMARKS)
    angle = index * math.pi * (3 - math.sqrt(5))
    return np.stack([0.5 + 0.3 * radius * np.cos(angle), 0.45 + 0.36 * radius * np.sin(angle)], axis=-1)


def _smooth_basis(vertices: np.ndarray, count: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """``[3N, count]`` deformation modes that are low-order polynomials of the vertex position: any
    combination keeps the surface smooth (random per-vertex modes would crumple it)."""
    x, y = vertices[:, 0] / 0.75, vertices[:, 1]
    features = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)             # [N, 6]
    weights = rng.standard_normal((count, 3, features.shape[1])) * scale
    modes = np.einsum("nj,kij->nik", features, weights)                                  # [N, 3, count]
    return modes.reshape(-1, count).astype(np.float32)


def write_standin_bfm(folder: Path, layout: np.ndarray, seed: int = 0) -> Path:
    """``BFM/`` with a dome in the official formats: ``BFM_model_front.mat`` (meanshape, idBase, exBase, tri,
    keypoints), the MediaPipe index (each landmark on the dome vertex under its ``layout`` position, the dome
    spanning the landmarks' box) and the two eye-triangle files (1-based, like the official ones)."""
    import scipy.io

    from .geometry.secc import LEFT_EYE_FACES_FILE, RIGHT_EYE_FACES_FILE

    rng = np.random.default_rng(seed)
    vertices, triangles = _dome_vertices()
    low, high = layout.min(0), layout.max(0)
    # landmark → dome coordinates: the landmarks' box onto 90 % of the dome's (image y down, dome y up)
    target_x = ((layout[:, 0] - low[0]) / (high[0] - low[0]) * 2 - 1) * 0.9 * 0.75
    target_y = -((layout[:, 1] - low[1]) / (high[1] - low[1]) * 2 - 1) * 0.9
    distance = (vertices[None, :, 0] - target_x[:, None]) ** 2 + (vertices[None, :, 1] - target_y[:, None]) ** 2
    mp_index = distance.argmin(1)
    centroids = vertices[triangles].mean(1)
    eyes = [np.flatnonzero(np.hypot(centroids[:, 0] - side * 0.25, centroids[:, 1] - 0.3) < 0.08) + 1
            for side in (-1, 1)]
    target = folder / "BFM"
    target.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(target / "BFM_model_front.mat", {
        "meanshape": vertices.reshape(1, -1).astype(np.float32),
        "idBase": _smooth_basis(vertices, 80, 0.02, rng),
        "exBase": _smooth_basis(vertices, 64, 0.015, rng),
        "tri": (triangles + 1).astype(np.float64),
        "keypoints": (mp_index[:68] + 1).astype(np.float64)[None]})
    np.save(target / "index_mp468_from_mesh35709.npy", mp_index[:468].astype(np.int64))
    np.save(target / LEFT_EYE_FACES_FILE, eyes[0].astype(np.int64))
    np.save(target / RIGHT_EYE_FACES_FILE, eyes[1].astype(np.int64))
    return target / "BFM_model_front.mat"


def tiny_video_model() -> torch.nn.Module:
    """The tiny configuration of the video model with seeded random weights (64² frames): the same model on every
    call, in any process (batch workers build their own)."""
    from .models.secc2plane_torso import Secc2PlaneTorso, tiny_config

    torch.manual_seed(0)
    return Secc2PlaneTorso(tiny_config()).eval().requires_grad_(False)


def write_tiny_hubert(folder: Path) -> Path:
    """A 1-layer HuBERT with the large model's 1024-d features and 320-sample hop (random, seeded weights)."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256,
                          conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          feat_extract_norm="layer", do_stable_layer_norm=True)
    target = folder / "hubert" / "hubert-large-ls960-ft"
    HubertModel(config).eval().save_pretrained(target, safe_serialization=True)
    return target


# Talk3D's wav2vec2 at a miniature size: the real model's feature-encoder strides and kernels (one logit row per
# 320 samples, receptive field 400), layer-norm extractor, pre-LN transformer and 44-symbol CTC head, with narrow
# convolutions and a 2-layer, 32-wide transformer. Written here (not read from ../shared) so the package is
# self-contained.
TINY_WAV2VEC2_CONFIG = {
    "vocab_size": 44, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_dim": (32,) * 7,
    "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_bias": True,
    "feat_extract_activation": "gelu", "hidden_act": "gelu", "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "layer_norm_eps": 1e-5, "pad_token_id": 43, "bos_token_id": 1,
    "eos_token_id": 2, "ctc_loss_reduction": "mean", "architectures": ["Wav2Vec2ForCTC"]}
TINY_EG3D_FILE = "eg3d/standin-tiny-triplane.safetensors"
TINY_EG3D_METADATA = {"format": "r3dp-eg3d-generator", "config": "tiny"}


def tiny_eg3d_generator(seed: int = 0) -> torch.nn.Module:
    """The tiny EG3D generator (:func:`r3dp_core.talk3d.eg3d_generator.tiny_config`: 16² tri-planes of 4 channels,
    16² render, 64² output) with weights seeded by ``seed``; the global RNG is left as it was. Eval mode."""
    from .talk3d.eg3d_generator import TriPlaneGenerator, tiny_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TriPlaneGenerator(tiny_config()).eval()


def write_tiny_wav2vec2(folder: Path, seed: int = 0) -> Path:
    """A miniature ``Wav2Vec2ForCTC`` (:data:`TINY_WAV2VEC2_CONFIG`, random seeded weights, about 50 k parameters)
    with its feature-extractor config (16 kHz, ``do_normalize``) in the ``wav2vec2`` slot's folder."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    target = folder / model_files.BY_KEY["wav2vec2"].relpath
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY_WAV2VEC2_CONFIG)).eval()
    model.save_pretrained(target, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(target)
    return target


def write_talk3d_models(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Fill ``folder`` with the stand-ins ``r3dp personalise --preset tiny`` needs: the tiny EG3D generator as
    safetensors (``eg3d/standin-tiny-triplane.safetensors``, an alternative of the ``eg3d_ffhq`` slot; metadata
    ``{"format": "r3dp-eg3d-generator", "config": "tiny"}``; keys = ``TriPlaneGenerator(tiny_config())``'s) and the
    miniature wav2vec2 CTC folder (``wav2vec2`` slot). No loss networks, no segmenter; the face landmarker is the
    caller's (the real file, or :func:`~r3dp_core.geometry.landmarks.write_standin_landmarker` as in
    :func:`write_standin_models`).

    Returns:
        ``{"eg3d_ffhq": generator file, "wav2vec2": model folder}``.
    """
    from .checkpoint import save_safetensors

    folder = Path(folder)
    generator_file = folder / TINY_EG3D_FILE
    if TINY_EG3D_FILE not in model_files.BY_KEY["eg3d_ffhq"].alternatives:
        raise AssertionError(f"{TINY_EG3D_FILE} is not a path of the eg3d_ffhq slot")
    generator_file.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(tiny_eg3d_generator(seed).state_dict(), generator_file, TINY_EG3D_METADATA)
    return {"eg3d_ffhq": generator_file, "wav2vec2": write_tiny_wav2vec2(folder, seed)}


def write_standin_models(folder: Path, layout: np.ndarray, landmarker: Path | None, seed: int = 0) -> torch.nn.Module:
    """Fill ``folder`` with a stand-in for every file of a job, in the layouts users download: the video model (the
    tiny configuration of the same architecture, as safetensors), the audio model (the real architecture, random
    weights, trainer ``.ckpt``), the one-layer HuBERT, the dome BFM laid out under ``layout``, and the face
    landmarker (``landmarker`` copied, else the stand-in landmarker reporting ``layout``). Returns the tiny video
    model, loaded back from its file with strict keys."""
    from .checkpoint import load_checkpoint, load_into, save_safetensors
    from .geometry.landmarks import write_standin_landmarker
    from .models.a2m_vae import A2MConfig, AudioToMotionVAE
    from .models.secc2plane_torso import Secc2PlaneTorso, tiny_config

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    video_file = folder / model_files.BY_KEY["video_model"].alternatives[0]
    save_safetensors(Secc2PlaneTorso(tiny_config()).state_dict(), video_file,
                     {"format": "pt", "r3dp_model": "secc2plane_torso"})
    video_model = Secc2PlaneTorso(tiny_config())
    load_into(video_model, load_checkpoint(video_file, expected="secc2plane_torso").state_dict, str(video_file))
    audio_file = folder / model_files.BY_KEY["audio_model"].relpath
    audio_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model": AudioToMotionVAE(A2MConfig()).state_dict()}}, audio_file)
    write_tiny_hubert(folder)
    write_standin_bfm(folder, layout, seed)
    landmarker_slot = folder / model_files.BY_KEY["face_landmarker"].relpath
    if landmarker is not None:
        shutil.copyfile(landmarker, landmarker_slot)
    else:
        write_standin_landmarker(landmarker_slot, layout)
    return video_model.eval().requires_grad_(False)


def standin_masks(layout: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Head (landmark ellipse grown for hair) and body (below the chin) masks, uint8 [H,W]: the segmenter's
    stand-in."""
    y, x = np.mgrid[0:height, 0:width]
    points = layout * (width, height)
    (left, top), (right, bottom) = points.min(0), points.max(0)
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    head = ((x - centre_x) / (0.65 * (right - left))) ** 2 + ((y - centre_y) / (0.65 * (bottom - top))) ** 2 < 1
    body = (y > bottom - 0.05 * (bottom - top)) & (np.abs(x - centre_x) < 0.9 * (right - left)) & ~head
    return head.astype(np.uint8) * 255, body.astype(np.uint8) * 255


def standin_speech(seconds: float, rate: int = 16000) -> np.ndarray:
    """A 180 Hz tone, amplitude-modulated at 3 Hz (float32 samples in [-0.3, 0.3]): speech's stand-in."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """A mono 16-bit PCM wav of ``samples`` (floats, clipped to [-1, 1]) at ``rate`` Hz."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((np.clip(samples, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# --- a synthetic talking video --------------------------------------------------------------------------------------
# The face of a photo is cropped with a small smooth head motion (translation ±5 px, rotation ±3°), its mouth opened
# by a vertical warp driven by the loudness envelope of the speech (looped), and its eyes closed (covered with the
# skin just above them) for 5 frames every 2 s; written with PyAV as H.264 + AAC (mono, 16 kHz). On the example
# portrait (``examples/portrait.png``, :data:`EXAMPLE_FACE`) MediaPipe detects the face in every frame. The options
# make the bad inputs of ``r3dp personalise``'s preparation (two faces side by side, frames without a face, no audio
# track) and a variable-frame-rate file.

TALKING_RATE = 16_000             # Hz of the speech given and of the audio track written
BLINK_EVERY_S, BLINK_FRAMES = 2.0, 5


@dataclass(frozen=True)
class TalkingFace:
    """Where the face of a photo is, in photo pixels (x, y). The mouth and eye warps are sized for a face about
    90 px wide (the example portrait's)."""

    centre: tuple[float, float]                                  #: between the eyes and the mouth: the crop centre
    mouth: tuple[float, float]                                   #: the mouth centre (the lip line)
    eyes: tuple[tuple[float, float], tuple[float, float]]        #: the two eye centres
    crop_side: float = 200.0                                     #: photo pixels shown across a one-face frame
    no_face: tuple[float, float] = (430.0, 430.0)                #: a crop centre where the photo shows no face


#: The face of the 512² example portrait (``examples/portrait.png``), measured with MediaPipe: nose tip (224, 131),
#: mouth centre (223, 146), eyes near (205, 101) and (245, 104), face about 90 px wide.
EXAMPLE_FACE = TalkingFace(centre=(224.0, 128.0), mouth=(223.0, 146.0), eyes=((205.0, 101.5), (245.0, 104.0)))


def blink_frames(times: np.ndarray) -> np.ndarray:
    """``[T]`` bool: whether the eyes are shut at each time (s): 0.2 s starting 1 s in, then every 2 s."""
    times = np.asarray(times, np.float64)
    phase = (times - 1.0) % BLINK_EVERY_S
    return (times >= 1.0) & (phase < BLINK_FRAMES / 25.0)


def _loop(speech: np.ndarray, seconds: float) -> np.ndarray:
    return np.resize(np.asarray(speech, np.float32), int(round(seconds * TALKING_RATE))).astype(np.float32)


def _envelope(wave: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Loudness in [0,1] at each time (RMS of 40 ms around it, normalised by the 95th percentile)."""
    half = TALKING_RATE // 50
    centres = (times * TALKING_RATE).astype(int)
    rms = np.array([np.sqrt(np.mean(wave[max(0, c - half):c + half] ** 2) + 1e-12) for c in centres])
    return np.clip(rms / (np.percentile(rms, 95) + 1e-6), 0.0, 1.0)


def _talking_face(photo: np.ndarray, face: TalkingFace, opening: float, shut: bool) -> np.ndarray:
    """The photo with its mouth opened by ``opening`` in [0,1] (up to 7 px) and the eyes shut or not."""
    import cv2

    height, width = photo.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = photo.copy()
    if shut:
        for ex, ey in face.eyes:
            patch = image[int(ey) - 14:int(ey) - 8, int(ex) - 12:int(ex) + 12].reshape(-1, 3).mean(0)
            inside = ((x - ex) / 13.0) ** 2 + ((y - ey) / 6.5) ** 2 < 1
            image[inside] = patch.astype(np.uint8)
            lid = inside & (np.abs(y - ey) < 0.8)
            image[lid] = (0.6 * patch).astype(np.uint8)   # the lash line of a shut eye
    gap = 7.0 * float(opening)
    if gap > 0.2:
        mx, my = face.mouth
        falloff = np.clip(1 - ((x - mx) / 22.0) ** 2, 0, 1) * np.exp(-((y - my) / 14.0) ** 2)
        shift = gap / 2 * falloff * np.sign(y - my)
        # sample from nearer the lip line: the lips move apart, the line between them widens into a dark gap
        warped = cv2.remap(image, x, (y - shift).astype(np.float32), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        dark = (np.abs(y - my) < gap / 2 * falloff) & (falloff > 0.3)
        warped[dark] = (warped[dark] * 0.25).astype(np.uint8)
        image = warped
    return image


def _view(image: np.ndarray, size: int, centre: tuple[float, float], side: float, angle: float,
          width_px: int | None = None) -> np.ndarray:
    """``[size, width_px or size, 3]``: the square of ``side`` photo pixels around ``centre`` rotated by
    ``angle`` degrees."""
    import cv2

    out_w = width_px or size
    scale = size / side
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += (out_w / 2 - centre[0], size / 2 - centre[1])
    return cv2.warpAffine(image, matrix, (out_w, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def render_talking_frames(seconds: float, *, photo: np.ndarray, speech: np.ndarray, size: int = 256,
                          fps: float = 25, faces: int = 1, face_missing_fraction: float = 0.0, seed: int = 0,
                          times: np.ndarray | None = None, face: TalkingFace = EXAMPLE_FACE
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames of :func:`write_talking_video`: ``(frames uint8 [T,S,S,3], times [T] s, missing [T] bool)``;
    ``times`` (seconds) default to every ``1/fps`` over ``seconds``."""
    rng = np.random.default_rng(seed)
    times = np.arange(int(round(seconds * fps))) / fps if times is None else np.asarray(times, np.float64)
    opening = _envelope(_loop(speech, seconds + 1.0), times)
    shut = blink_frames(times)
    missing = np.zeros(len(times), bool)
    if face_missing_fraction > 0:
        count = int(round(face_missing_fraction * len(times)))
        runs = max(1, count // 4)
        starts = np.sort(rng.choice(np.arange(len(times) - 4), runs, replace=False))
        for start in starts:
            missing[start:start + 4] = True
        extra = np.flatnonzero(~missing)
        while missing.sum() < count:
            missing[rng.choice(extra)] = True
        while missing.sum() > count:
            missing[np.flatnonzero(missing)[-1]] = False
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = np.empty((len(times), size, size, 3), np.uint8)
    empty = _view(photo, size, face.no_face, face.crop_side, 0.0)
    for index, t in enumerate(times):
        if missing[index]:
            frames[index] = empty
            continue
        image = _talking_face(photo, face, opening[index], shut[index])
        dx, dy = 5 * np.sin(0.9 * t + phase[0]), 4 * np.sin(0.7 * t + phase[1])
        angle = 3 * np.sin(0.5 * t + phase[2])
        centre = (face.centre[0] + dx, face.centre[1] + dy)
        if faces == 1:
            frames[index] = _view(image, size, centre, face.crop_side, angle)
        else:
            half = size // faces
            tiles = [_view(image, size, centre, face.crop_side * 1.15, angle * (1 - 2 * (k % 2)), width_px=half)
                     for k in range(faces)]
            row = np.concatenate(tiles, axis=1)
            frames[index] = np.pad(row, ((0, 0), (0, size - row.shape[1]), (0, 0)), mode="edge")
    return frames, times, missing


def write_video(path: str | Path, frames: np.ndarray, times: np.ndarray, fps: float,
                audio: np.ndarray | None = None) -> Path:
    """Encode ``frames`` (RGB uint8 ``[T,H,W,3]``) shown at ``times`` (seconds; any spacing: variable frame rate)
    as H.264, with ``audio`` (16 kHz mono float32) as AAC when given."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.time_base = time_base
        video.codec_context.time_base = time_base
        video.options = {"crf": "20", "preset": "veryfast"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=TALKING_RATE)
            sound.layout = "mono"
        for image, t in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), time_base
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            block = 1024
            for start in range(0, len(audio), block):
                frame = av.AudioFrame.from_ndarray(audio[None, start:start + block], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = TALKING_RATE, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def write_talking_video(path: str | Path, seconds: float, *, photo: np.ndarray, speech: np.ndarray, size: int = 256,
                        fps: float = 25, audio: bool = True, faces: int = 1, face_missing_fraction: float = 0.0,
                        seed: int = 0, variable_rate: bool = False, face: TalkingFace = EXAMPLE_FACE) -> Path:
    """Write a synthetic talking video of ``photo``'s face speaking ``speech`` to ``path`` (an mp4) and return it.

    Args:
        seconds: length. ``size``: frame side (square, even). ``fps``: frame rate (the mean rate when
            ``variable_rate``: frame intervals then vary between 0.5 and 1.5 periods).
        photo: RGB uint8 ``[H,W,3]``; ``face`` says where its face is (default: the example portrait's).
        speech: 16 kHz mono float32 samples, looped to the length; they drive the mouth.
        audio: mux the speech as AAC; False writes a video without an audio track.
        faces: copies of the face side by side (2: the several-faces refusal).
        face_missing_fraction: share of frames (in runs of 4) showing a part of the photo without a face.
        seed: head-motion phases and which frames lose the face.
    """
    rng = np.random.default_rng(seed + 1)
    if variable_rate:
        steps = rng.uniform(0.5, 1.5, int(seconds * fps) + 8) / fps
        times = np.concatenate([[0.0], np.cumsum(steps)])
        times = times[times < seconds - 0.5 / fps]
    else:
        times = np.arange(int(round(seconds * fps))) / fps
    frames, times, _ = render_talking_frames(seconds, photo=photo, speech=speech, size=size, fps=fps, faces=faces,
                                             face_missing_fraction=face_missing_fraction, seed=seed, times=times,
                                             face=face)
    return write_video(Path(path), frames, times, fps, _loop(speech, seconds) if audio else None)


@dataclass
class StandinPrepared:
    """A prepared video held in memory, with the attributes persona training, phase A and the evaluation read from
    a :class:`~r3dp_core.talk3d.personalise.prepare.PreparedVideo` (made by :func:`standin_prepared`)."""

    crops: np.ndarray                  #: uint8 ``[N,S,S,3]``
    masks: np.ndarray                  #: uint8 ``[N,4,S,S]`` face, mouth, body, torso
    tracks: dict[str, torch.Tensor]
    audio_features: torch.Tensor       #: ``[N+1,16,44]``
    audio: np.ndarray                  #: float32 16 kHz
    info: dict

    @property
    def num_frames(self) -> int:
        return self.crops.shape[0]

    @property
    def train_frames(self) -> int:
        from .talk3d.personalise.prepare import train_frame_count

        return train_frame_count(self.num_frames)


def standin_prepared(crops: np.ndarray, *, masks: np.ndarray | None = None, seed: int = 0) -> StandinPrepared:
    """``crops`` (uint8 ``[N,S,S,3]``) as a prepared video: seeded random token tracks (head angles in degrees,
    landmarks in [-1,1], blink in [0,2]), a mouth box and lips in the lower middle of the crop, identity similarity
    transforms, random audio windows and silent audio; ``masks`` all ones when None."""
    rng = np.random.default_rng(seed)
    count, size = crops.shape[0], crops.shape[1]
    lips = np.tile(np.array([[0.4, 0.72], [0.6, 0.72], [0.5, 0.68], [0.5, 0.76]]) * size, (count, 10, 1))
    tracks = {"head_angles": torch.from_numpy(rng.normal(0, 5, (count, 3)).astype(np.float32)),
              "landmarks": torch.from_numpy(rng.uniform(-0.5, 0.5, (count, 6, 2)).astype(np.float32)),
              "blink": torch.from_numpy(rng.uniform(0, 2, count).astype(np.float32)),
              "mouth_box": torch.tensor([[0.25, 0.375, 0.75, 0.875]]).repeat(count, 1) * size,
              "lips": torch.from_numpy(lips.astype(np.float32)),
              "similarity": torch.eye(2, 3).repeat(count, 1, 1)}
    return StandinPrepared(crops=crops, masks=np.ones((count, 4, size, size), np.uint8) if masks is None else masks,
                           tracks=tracks,
                           audio_features=torch.from_numpy(rng.normal(0, 1, (count + 1, 16, 44)).astype(np.float32)),
                           audio=np.zeros(16000 * count // 25, np.float32), info={"frames": count})
