"""Face detection, the official six alignment points, the reference face and the similarity warp (spec §1.2 step 2).

**Six points.** The official preprocessing keeps FAN's 68-point indices ``[30, 8, 45, 36, 64, 60]``: nose tip, chin,
the outer corner of the subject's left eye (45, image right), of the right eye (36, image left), and the
inner-lip corners (64 subject's left, 60 right). r3dp detects MediaPipe's 478 points instead; the points standing
for them (:data:`MEDIAPIPE_SIX`) are

=========  ==============================  ==================================================================
68-point   MediaPipe                       why
=========  ==============================  ==================================================================
30         1                               MediaPipe's nose tip (``noseTip`` of its annotations)
8          152                             the lowest point of the face oval, on the midline (chin)
45         263                             subject's left eye, outer corner
36         33                              subject's right eye, outer corner
64         308                             subject's left inner-lip corner (an ``INNER_LIP_IDS`` corner)
60         78                              subject's right inner-lip corner
=========  ==============================  ==================================================================

**Temporal smoothing** as officially: a Gaussian of σ = 2 frames over time (``mode='nearest'``), then a cast to
int32 (a quirk kept on purpose: the official crops and ``landmarks.pt`` are made from the truncated points, in the
raw frame's pixels).

**Similarity** (official ``Aligner.get_alignment_matrix``, an Umeyama/Procrustes fit): both point sets are centred,
divided by the standard deviation of all their coordinates, ``R = (U Vᵀ)ᵀ`` from the SVD of ``P₁ᵀ P₂``, scale
``s₂/s₁``; ``M = [sR | c₂ − sR c₁]`` maps frame pixels to crop pixels. Crops are ``cv2.warpAffine`` with
Lanczos-4 and a replicated border, clipped to [0,255].

**Reference face.** Officially the six points of EG3D's *average face* (mean W of 10 000 mapped samples, seed
123) rendered at yaw 0, pitch −0.1 (:func:`reference_points`). When the generator renders no detectable face (the
tiny stand-in, random weights) the documented template :data:`TEMPLATE_512` is used instead; which one is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...geometry.landmarks import create_landmarker, faces_in_result, standin_layout, to_mediapipe_image

#: The official 68-point indices of the six alignment points and the MediaPipe points standing for them.
OFFICIAL_SIX = (30, 8, 45, 36, 64, 60)
MEDIAPIPE_SIX = (1, 152, 263, 33, 308, 78)
SMOOTH_SIGMA = 2.0

#: The six points (order of :data:`MEDIAPIPE_SIX`) in a 512² crop in EG3D's FFHQ framing, used when the generator
#: renders no detectable face. The face spans the middle of the crop as in EG3D's FFHQ crops (outer eye corners
#: 160 px apart at 45 % of the height, centred); the other points keep the proportions MediaPipe measures on a
#: real frontal face (``astronaut_512.png``): chin 1.25 eye-distances below the eyes, nose tip at 0.39 and the
#: inner-lip corners at 0.51 of that drop, the lip corners 0.65 eye-distances apart.
TEMPLATE_512 = np.array([
    [256.0, 308.0],   # nose tip
    [256.0, 430.0],   # chin
    [336.0, 230.0],   # subject's left eye, outer corner (image right)
    [176.0, 230.0],   # subject's right eye, outer corner (image left)
    [308.0, 332.0],   # subject's left inner-lip corner
    [204.0, 332.0],   # subject's right inner-lip corner
])
REFERENCE_SEED = 123
REFERENCE_SAMPLES = 10_000
REFERENCE_YAW, REFERENCE_PITCH = 0.0, -0.1


def six_points(points: np.ndarray) -> np.ndarray:
    """``[..., 478, 2]`` MediaPipe points → ``[..., 6, 2]`` the official six (:data:`MEDIAPIPE_SIX`)."""
    return np.asarray(points)[..., MEDIAPIPE_SIX, :]


def smooth_six(points: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """``[N,6,2]`` per-frame points (pixels) → the same smoothed over time (Gaussian σ, ``mode='nearest'``) and cast
    to int32 as officially (a quirk: the fractions are truncated)."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(points, np.float64), sigma, axis=0, mode="nearest").astype(np.int32)


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The official similarity ``[2,3]`` float64 taking ``source`` ``[K,2]`` points onto ``target`` ``[K,2]``
    (module docstring: std-normalised Procrustes, scale ``s_target / s_source``)."""
    p1 = np.asarray(source, np.float64)
    p2 = np.asarray(target, np.float64)
    c1, c2 = p1.mean(0), p2.mean(0)
    p1, p2 = p1 - c1, p2 - c2
    s1, s2 = p1.std(), p2.std()
    p1, p2 = p1 / s1, p2 / s2
    u, _, vt = np.linalg.svd(p1.T @ p2)
    rotation = (u @ vt).T
    scaled = (s2 / s1) * rotation
    return np.hstack([scaled, (c2 - scaled @ c1)[:, None]])


def invert_similarity(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a ``[...,2,3]`` affine (crop pixels → frame pixels: the paste-back)."""
    matrix = np.asarray(matrix, np.float64)
    linear = np.linalg.inv(matrix[..., :2])
    return np.concatenate([linear, -(linear @ matrix[..., 2:])], axis=-1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[2,3]`` affine applied to ``[...,2]`` points."""
    matrix = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``[H,W,3]`` uint8 frame → ``[size,size,3]`` uint8 crop (Lanczos-4, replicated border, clipped)."""
    import cv2

    warped = cv2.warpAffine(frame.astype(np.float32), np.asarray(matrix, np.float64), (size, size),
                            flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(warped, 0, 255).astype(np.uint8)


# --- detection ------------------------------------------------------------------------------------------------

@dataclass
class Detection:
    """One face in one image: ``points`` ``[478,2]`` float64 pixels; ``blink`` the mean of MediaPipe's
    ``eyeBlinkLeft``/``eyeBlinkRight`` blend shapes in [0,1] (None for a stand-in landmarker)."""

    points: np.ndarray
    blink: float | None = None

    @property
    def centre(self) -> np.ndarray:
        return (self.points.min(0) + self.points.max(0)) / 2

    @property
    def width(self) -> float:
        return float(self.points[:, 0].max() - self.points[:, 0].min())

    @property
    def area(self) -> float:
        return float(np.prod(self.points.max(0) - self.points.min(0)))


@dataclass
class FaceDetector:
    """MediaPipe's face landmarker in IMAGE mode with blend shapes, finding up to ``max_faces`` faces; a stand-in
    landmarker file (:func:`~r3dp_core.geometry.landmarks.standin_layout`) 'finds' its fixed face, with no blink.
    Use as a context manager."""

    model_path: Path
    max_faces: int = 4
    layout: np.ndarray | None = field(default=None, init=False)
    _landmarker: object = field(default=None, init=False, repr=False)

    def __enter__(self) -> FaceDetector:
        self.layout = standin_layout(self.model_path)
        if self.layout is None:
            self._landmarker = create_landmarker(self.model_path, video=False, num_faces=self.max_faces,
                                                 blendshapes=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    @property
    def is_standin(self) -> bool:
        return self.layout is not None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face in an RGB uint8 ``[H,W,3]`` image, largest first."""
        height, width = image.shape[:2]
        if self.layout is not None:
            return [Detection(self.layout * (width, height), None)]
        result = self._landmarker.detect(to_mediapipe_image(np.ascontiguousarray(image)))
        faces = faces_in_result(result, width, height)
        shapes = result.face_blendshapes or [None] * len(faces)
        found = []
        for points, scores in zip(faces, shapes):
            blink = None
            if scores:
                named = {c.category_name: c.score for c in scores}
                blink = 0.5 * (named.get("eyeBlinkLeft", 0.0) + named.get("eyeBlinkRight", 0.0))
            found.append(Detection(points, blink))
        return sorted(found, key=lambda d: -d.area)


def left_to_right(faces: list[Detection]) -> list[Detection]:
    """Faces numbered as ``--face N`` counts them: from the left of the image to the right (by centre)."""
    return sorted(faces, key=lambda d: float(d.centre[0]))


class FaceTrack:
    """Follows one face through the frames: the first pick by rule (``'largest'`` / ``N``-th from the left), then
    in each frame the face nearest the previous pick (within one face width; farther counts as missing)."""

    def __init__(self, face: str | int | None):
        self.face = face
        self.last: Detection | None = None

    def pick(self, faces: list[Detection]) -> Detection | None:
        if not faces:
            return None
        if self.last is None:
            if isinstance(self.face, int):
                ordered = left_to_right(faces)
                chosen = ordered[self.face] if self.face < len(ordered) else None
            else:
                chosen = max(faces, key=lambda d: d.area)
        else:
            distances = [float(np.linalg.norm(d.centre - self.last.centre)) for d in faces]
            best = int(np.argmin(distances))
            chosen = faces[best] if distances[best] <= max(self.last.width, 1.0) else None
        if chosen is not None:
            self.last = chosen
        return chosen


# --- the reference face ---------------------------------------------------------------------------------------

@torch.no_grad()
def average_face(generator, samples: int = REFERENCE_SAMPLES, seed: int = REFERENCE_SEED,
                 batch: int = 1000) -> np.ndarray:
    """The generator's average face (official ``get_average_w``: mean W of ``samples`` mapped z drawn with
    ``seed``) rendered at yaw 0, pitch −0.1 → uint8 ``[S,S,3]`` RGB (S = the generator's output size)."""
    device = generator.device
    rng = torch.Generator().manual_seed(seed)
    z_dim = generator.config.z_dim
    total, count = None, 0
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        z = torch.randn(n, z_dim, generator=rng)
        ws = generator.mapping(z.to(device))
        part = ws.double().sum(0)
        total = part if total is None else total + part
        count += n
    ws = (total / count).to(torch.float32)[None]
    planes = generator.synthesize_planes(ws)
    camera = generator.cameras(REFERENCE_YAW, REFERENCE_PITCH)
    render_gen = torch.Generator(device=device).manual_seed(seed) if device.type != "mps" else None
    image = generator.render(planes, ws, camera, generator=render_gen).image[0]
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def template_points(image_size: int) -> np.ndarray:
    """:data:`TEMPLATE_512` scaled to an ``image_size``² crop, ``[6,2]`` float64."""
    return TEMPLATE_512 * (image_size / 512.0)


def reference_points(generator, landmarker: str | Path, image_size: int, samples: int = REFERENCE_SAMPLES
                     ) -> tuple[np.ndarray, str]:
    """The six reference points ``[6,2]`` float64 in ``image_size``² crop pixels and their kind.

    ``'generator'``: MediaPipe's six points on :func:`average_face` (scaled from the render's size); ``'template'``:
    :func:`template_points`, when there is no generator, the landmarker is a stand-in, or no face is detected on
    the render (the tiny stand-in generator).
    """
    if generator is None or standin_layout(landmarker) is not None:
        return template_points(image_size), "template"
    image = average_face(generator, samples=samples)
    with FaceDetector(Path(landmarker), max_faces=1) as detector:
        faces = detector.detect(image)
    if not faces:
        return template_points(image_size), "template"
    return six_points(faces[0].points) * (image_size / image.shape[0]), "generator"
