"""Paste-back: the animated 512² square put back into the original photo, frame by frame, as a streaming stage.

Each 512² frame is resized into the square it was cut from (``framing.crop_square``, kept on the avatar in
the pixels of the photo canvas, ``framing.photo_canvas``) and blended into the photo through a feathered mask
that covers the animated person: the union of HTB-SR's person mask of the frame (head + torso, so moving hair and
shoulders are covered) and the person of the source photo (so the original head is replaced where it no longer
is), dilated and feathered, and faded out towards the square's edges (so the torso and the background continue
into the photo without a seam). Outside the mask the output pixels are the photo's exactly. The mask, the fade
and the paste are the pure functions of ``geometry/compositing.py``; this module feeds them an avatar's photo,
square and segmentation, chunk by chunk.

In a photo of several people the avatar's segmentation holds only its own person, and its ``other_people`` marks
the others inside the square: the blend is exactly 0 on them, grown by the blend's own dilation, and rises over
the feather width beyond, so a paste changes only its own person's pixels and chained pastes (one person after
the other) leave the people pasted before them alone.

:class:`PasteBackSource` is one more streaming stage over the composite source: each chunk is pasted as it
comes, so memory stays flat in clip length. :class:`ClipPasteSource` pastes a clip already in memory (the Paste
Back nodes' IMAGE frames) range by range: :func:`paste_clip` fills a whole-clip IMAGE from it (allocated once),
:func:`write_clip_video` encodes it chunk by chunk without ever forming the whole clip; :func:`clip_sources` pairs
the nodes' clips with their avatars, masks and backgrounds, and :func:`paste_clips` pastes them one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..geometry.compositing import BLEND_DILATION, BLEND_FEATHER, FRAME_SIZE, blend_mask, paste, resize_mask
from ..geometry.framing import CropSquare
from ..geometry.segmentation import PERSON_CLASSES, segmap_mask
from ..host import HERE, Host
from ..images import uint8_to_unit
from .stream import FrameSource, iterate_chunks


def source_person_mask(avatar) -> torch.Tensor | None:
    """``[1,1,512,512]`` the person in the avatar's source square (every class but background), or None; with
    other people in the square (``avatar.other_people``) ``[1,2,512,512]``, the second channel marking them
    (:func:`blend_mask` leaves them alone)."""
    if avatar.segmap is None:
        return None
    person = segmap_mask(avatar.segmap, PERSON_CLASSES, keepdim=True)
    others = getattr(avatar, "other_people", None)
    if others is None:
        return person
    return torch.cat([person, resize_mask(others.float().to(person.device), person.shape[-2:])], 1)


def avatar_placement(avatar) -> tuple[torch.Tensor, CropSquare]:
    """The avatar's photo canvas ``[H,W,3]`` uint8 and its square; a clear error for avatars made without them."""
    if avatar.photo is None or avatar.photo_square is None:
        raise InputError("This avatar carries no photo to paste into (it was saved by an older r3dp); prepare it "
                         "again from the photo with Image → Triplane.")
    left, top, side = (int(v) for v in avatar.photo_square.tolist())
    return avatar.photo, CropSquare(left, top, side)


def paste_frames(frames: torch.Tensor, person: torch.Tensor | None, source_person: torch.Tensor | None,
                 base: torch.Tensor, square: CropSquare, feather: int = BLEND_FEATHER
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of animated squares pasted into its base: :func:`blend_mask` where ``person`` is, then
    :func:`paste` where ``frames`` are.

    Args:
        frames: ``[B,3,S,S]`` float in [0,1].
        person: ``[B,1,S,S]`` HTB-SR's person mask of each frame (on any device), or None (the whole square).
        source_person: ``[1,1 or 2,h,w]`` the person of the source square and the other people in it
            (:func:`source_person_mask`), or None.
        base, square: as :func:`paste`.
        feather: soft edge width in pixels of a 512² frame.
    """
    weights = blend_mask(person, source_person, frames.shape[-1], BLEND_DILATION, feather)
    return paste(frames, weights.to(frames.device), base, square, fade=feather / FRAME_SIZE)


@dataclass
class PastedFrames:
    """image: ``[B,H,W,3]`` uint8 numpy frames at the photo canvas's size; mask: ``[B,H,W]`` float blend weights."""

    image: np.ndarray
    mask: torch.Tensor


@dataclass
class PasteBackSource(FrameSource):
    """The composite source's frames pasted into the avatar's photo, chunk by chunk (one more streaming stage)."""

    composite: FrameSource                               # chunks with .image [B,3,512,512] in [-1,1], .person_mask
    avatar: object                                       # types.Avatar with photo and photo_square

    def __post_init__(self):
        self.num_frames = self.composite.num_frames
        photo, self.square = avatar_placement(self.avatar)
        self.photo = photo.cpu()[None]
        self.source_person = source_person_mask(self.avatar)

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> PastedFrames:
        out = self.composite.chunk(start, stop, trace)
        frames = ((out.image.float() + 1) / 2).cpu()
        # the mask's dilation and blurs where HTB-SR ran; the paste beside the photo, on the CPU
        images, masks = paste_frames(frames, out.person_mask, self.source_person, self.photo, self.square)
        return PastedFrames(images.numpy(), masks)


#: Frames blended together by the Paste Back nodes: bounds the per-chunk intermediates (about 90 MB a frame on a
#: 1920x1080 photo).
PASTE_CHUNK = 8


def _square_on(base_h: int, base_w: int, photo: torch.Tensor, square: CropSquare) -> CropSquare:
    """The avatar's square on a base of ``base_w``×``base_h`` pixels (frames of the same photo, maybe resized)."""
    height, width = photo.shape[:2]
    if (base_h, base_w) == (height, width):
        return square
    if abs(base_w / width - base_h / height) > 0.01 * base_w / width:
        raise InputError(f"Paste Back: background_frames are {base_w}x{base_h} but the avatar's photo is "
                         f"{width}x{height}; give frames of the same photo (e.g. the first Paste Back's output).")
    return square.scaled(base_w / width)


class ClipPasteSource(FrameSource):
    """A clip already in memory (HTB-SR Composite's IMAGE frames) pasted into its photo, computed on demand in
    ranges: the Paste Back node fills its IMAGE output from it, and Paste Back (stream) hands it on lazily so that
    a long clip is encoded chunk by chunk without ever being held whole at the photo's resolution.

    ``chunk(start, stop)`` returns ``(images [B,H,W,3]`` float32 in [0,1], ``masks [B,H,W]`` float32 blend
    weights``)``. The clip has ``max(T, Tb)`` frames, ``Tb`` the background's length when it is more than one
    frame; the shorter one holds its last frame.

    Args:
        frames: ``[T,S,S,3]`` float in [0,1], the animated squares.
        avatar: the avatar they were made from (its photo and square).
        person: ``[T,S,S]`` HTB-SR's person mask of each frame, or None (the whole square, softened at its edges).
        background: what to paste into instead of the photo: ``[Tb,H,W,3]`` float in [0,1] (an IMAGE batch of the
            same photo, e.g. a previous Paste Back's output) or another ``ClipPasteSource`` (a previous paste,
            pulled range by range); None for the photo itself.
        feather: soft edge width in pixels of a 512² frame.
    """

    def __init__(self, frames: torch.Tensor, avatar, person: torch.Tensor | None = None,
                 background: torch.Tensor | ClipPasteSource | None = None, feather: int = BLEND_FEATHER):
        if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[0] == 0:
            raise InputError(f"Paste Back: images must be square frames [T,S,S,3] from HTB-SR Composite, got "
                             f"{tuple(frames.shape)}.")
        if person is not None and tuple(person.shape) != tuple(frames.shape[:3]):
            raise InputError(f"Paste Back: person_mask is {tuple(person.shape)} but the images are "
                             f"{tuple(frames.shape[:3])}; connect HTB-SR Composite's person_mask of the same clip.")
        photo, square = avatar_placement(avatar)
        if background is None:
            base_count, (base_h, base_w) = 1, photo.shape[:2]
            self._still = uint8_to_unit(photo.cpu()[None])
        elif isinstance(background, ClipPasteSource):
            base_count, base_h, base_w = background.num_frames, background.height, background.width
            self._still = None
        else:
            if background.ndim != 4 or background.shape[-1] < 3 or background.shape[0] == 0:
                raise InputError(f"Paste Back: background_frames must be an IMAGE batch [T,H,W,3], got "
                                 f"{tuple(background.shape)}.")
            base_count, base_h, base_w = background.shape[:3]
            self._still = background[:1, ..., :3].float() if base_count == 1 else None
        self.square = _square_on(int(base_h), int(base_w), photo, square)
        self.frames, self.person, self.background, self.feather = frames, person, background, int(feather)
        self.height, self.width = int(base_h), int(base_w)
        self.base_count = int(base_count)
        self.num_frames = max(int(frames.shape[0]), self.base_count if self.base_count > 1 else 0)
        self.source_person = source_person_mask(avatar)
        self._held = None                                # a source background's last frame, once it is held

    def _base(self, start: int, stop: int) -> torch.Tensor:
        """``[B or 1,H,W,3]`` float: the background of frames ``start:stop``."""
        if self._still is not None:
            return self._still
        last = self.base_count - 1
        if isinstance(self.background, ClipPasteSource):
            if start > last:
                if self._held is None:
                    self._held = self.background.chunk(last, last + 1)[0]
                return self._held
            base = self.background.chunk(start, min(stop, last + 1))[0]
            if stop - 1 > last:
                base = torch.cat([base, base[-1:].expand(stop - 1 - last, -1, -1, -1)])
            return base
        index = torch.arange(start, stop).clamp(max=last)
        return self.background[index][..., :3].float()

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_range(start, stop)
        index = torch.arange(start, stop)
        clip = self.frames[index.clamp(max=self.frames.shape[0] - 1)][..., :3].permute(0, 3, 1, 2).float()
        person = None
        if self.person is not None:
            person = self.person[index.clamp(max=self.person.shape[0] - 1)][:, None]
        return paste_frames(clip, person, self.source_person, self._base(start, stop), self.square, self.feather)


def clip_images(source: ClipPasteSource, *, on_chunk: Callable[[int, int, torch.Tensor], None] | None = None,
                should_stop: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame of a :class:`ClipPasteSource` as one IMAGE batch and its masks.

    The outputs are allocated once at their full size and filled chunk by chunk: a whole clip at the photo's
    resolution (``T·H·W·16`` bytes with its masks) is never held twice. ``on_chunk(done, total, last_frame
    [H,W,3])`` is called after every chunk; ``should_stop()`` before each (it may raise to interrupt).

    Returns:
        ``(images [T,H,W,3]`` float32 in [0,1], ``masks [T,H,W]`` float32``)``.
    """
    images = torch.empty(source.num_frames, source.height, source.width, 3)
    masks = torch.empty(source.num_frames, source.height, source.width)
    for start, stop, (pasted, mask) in iterate_chunks(source, PASTE_CHUNK, should_stop=should_stop):
        images[start:stop] = pasted
        masks[start:stop] = mask
        if on_chunk is not None:
            on_chunk(stop, source.num_frames, pasted[-1])
    return images, masks


def clip_sources(clips: list[torch.Tensor], avatars: list, person_masks: list[torch.Tensor] | None = None,
                 backgrounds: list | None = None, feather: int = BLEND_FEATHER,
                 background_name: str = "background_frames") -> list[ClipPasteSource]:
    """One :class:`ClipPasteSource` per clip, checked (nothing is pasted yet): the Paste Back nodes' inputs.

    Args:
        clips: ``[T,S,S,3]`` frames of each clip.
        avatars: the avatars the clips were made from: one for all clips, or one per clip.
        person_masks: HTB-SR's person mask of each clip (one for all, or one per clip), or None.
        backgrounds: what each clip is pasted into (``ClipPasteSource``'s ``background``: one for all, or one per
            clip), or None for each avatar's photo.
        feather: soft edge width in pixels of a 512² frame.
        background_name: what the error messages call ``backgrounds``.

    Raises:
        InputError: the numbers do not pair up, or a clip, mask or background does not fit (``ClipPasteSource``).
    """
    if len(avatars) not in (1, len(clips)):
        raise InputError(f"Paste Back: {len(clips)} clip(s) but {len(avatars)} avatar(s); connect the avatar "
                         "output that made these frames.")
    for name, given in (("person_mask", person_masks), (background_name, backgrounds)):
        if given is not None and len(given) not in (1, len(clips)):
            raise InputError(f"Paste Back: {len(clips)} clip(s) but {len(given)} {name}; give one, or one per "
                             "clip.")

    def pick(values: list | None, index: int):
        return None if values is None else values[min(index, len(values) - 1)]

    return [ClipPasteSource(clip, pick(avatars, i), pick(person_masks, i), pick(backgrounds, i), feather)
            for i, clip in enumerate(clips)]


def paste_clips(sources: list[ClipPasteSource], host: Host = HERE) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every clip of ``sources`` as an IMAGE batch and its masks (:func:`clip_images`), clip after clip, with
    progress over all their frames (the latest pasted frame as preview) and cancel between chunks."""
    total = sum(source.num_frames for source in sources)
    results, offset = [], 0
    for source in sources:
        def report(done: int, _total: int, last: torch.Tensor, offset: int = offset) -> None:
            host.report(offset + done, total, last)

        results.append(clip_images(source, on_chunk=report, should_stop=host.should_stop))
        offset += source.num_frames
    return results


def paste_clip(frames: torch.Tensor, avatar, person: torch.Tensor | None = None,
               background: torch.Tensor | None = None, feather: int = BLEND_FEATHER
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip already in memory pasted into its photo (or into ``background``), as one IMAGE batch: arguments as
    :class:`ClipPasteSource`, result as :func:`clip_images` (``T'`` frames, the longer of the clip and a
    multi-frame background)."""
    return clip_images(ClipPasteSource(frames, avatar, person, background, feather))


def write_clip_video(source: ClipPasteSource, path, fps: float, audio: dict | None = None, *,
                     chunk_size: int = PASTE_CHUNK, crf: int = 18,
                     on_chunk: Callable[[int, int, torch.Tensor], None] | None = None,
                     should_stop: Callable[[], None] | None = None):
    """Encode a :class:`ClipPasteSource` to an H.264 mp4 (+ AAC ``audio``), chunk by chunk: memory stays flat in
    clip length. Each chunk is converted to uint8 as an IMAGE batch is (``unit_to_uint8``'s arithmetic, in place);
    an odd width or height loses its last column or row. The file appears only when complete (``VideoWriter``):
    an interruption (``should_stop`` raising between chunks) or a failure leaves nothing behind.

    ``on_chunk(done, total, last_frame [H,W,3])`` is called after every chunk. Returns the path written.
    """
    from ..video_io import VideoWriter

    even_h, even_w = source.height // 2 * 2, source.width // 2 * 2
    with VideoWriter(path, fps=fps, audio=audio, crf=crf) as writer:
        for _, stop, (images, _) in iterate_chunks(source, chunk_size, should_stop=should_stop):
            last = images[-1].clone() if on_chunk is not None else None
            images = images[:, :even_h, :even_w].clamp_(0, 1).mul_(255).round_()   # the chunk is ours to reuse
            writer.write(images.to(torch.uint8).numpy())
            del images
            if on_chunk is not None:
                on_chunk(stop, source.num_frames, last)
    return writer.path
