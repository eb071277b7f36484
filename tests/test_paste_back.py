"""Paste-back: exact photo outside the blend, no seam, odd sizes, the cap, the avatar fields, the node."""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest
import torch
import torch.utils._pytree
from torch.utils._python_dispatch import TorchDispatchMode

from r3dp_core.errors import InputError
from r3dp_core.geometry.compositing import BLEND_FEATHER, blend_mask, paste
from r3dp_core.geometry.framing import MAX_PHOTO_SIDE, CropSquare, photo_canvas
from r3dp_core.pipeline.paste_back import PasteBackSource
from r3dp_core.pipeline.types import Avatar


def _person(batch: int = 2, size: int = 512) -> torch.Tensor:
    """A disc of a person in the middle of the square, moving right by 60 px (of 512) per frame."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = [(((rows - size * 0.45) ** 2 + (cols - size * 0.4 - size / 512 * 60 * t) ** 2) < (size * 0.2) ** 2).float()
             for t in range(batch)]
    return torch.stack(masks)[:, None]


def test_outside_the_blend_the_photo_is_kept_exactly():
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    frames = torch.rand(2, 3, 512, 512)
    square = CropSquare(180, -40, 200)                          # reaches past the top edge
    weights = blend_mask(_person(), None)
    images, masks = paste(frames, weights, photo[None], square)
    assert images.shape == (2, 300, 500, 3) and images.dtype == torch.uint8 and masks.shape == (2, 300, 500)
    outside = masks == 0
    assert bool(outside.any()) and bool((masks == 1).any())
    assert torch.equal(images[outside], photo[None].expand(2, -1, -1, -1)[outside])
    assert not bool(masks[:, :, :180].any()) and not bool(masks[:, :, 380:].any())  # nothing beyond the square
    # where the mask is 1, the pixels are the frame resized into the square
    resized = torch.nn.functional.interpolate(frames, size=(200, 200), mode="bilinear", antialias=True)
    expected = (resized.permute(0, 2, 3, 1)[:, 40:] * 255).round()
    full = masks[:, :160, 180:380] == 1
    assert (images[:, :160, 180:380][full].float() - expected[full]).abs().max() <= 1
    # the blend covers the moving person of every frame and the source person (so no second head shows)
    source = torch.zeros(1, 1, 512, 512)
    source[..., 400:460, 60:120] = 1
    both = blend_mask(_person(), source)
    assert bool((both[:, 0, 420:440, 80:100] == 1).all()) and not bool(weights[:, 0, 420:440, 80:100].any())
    assert float(both[1, 0, 230, 340]) == 1.0 and float(both[0, 0, 230, 340]) == 0.0  # frame 1's person moved right


def test_the_blend_is_continuous_across_the_seam():
    photo = torch.zeros(1, 400, 400, 3, dtype=torch.uint8)
    frames = torch.ones(1, 3, 512, 512)                          # white person over black photo: the harshest seam
    square = CropSquare(0, 0, 400)
    images, masks = paste(frames, blend_mask(_person(1), None), photo, square)
    feather_px = BLEND_FEATHER * 400 / 512
    for axis in (1, 2):
        step = images.float().diff(dim=axis).abs().max()
        assert float(step) <= 2.0 * 255 / feather_px              # no jump: at most ~2 ramp steps per pixel
    assert float(masks.max()) == 1.0 and float(masks.min()) == 0.0
    # the square's own border fades out too: a whole-square paste leaves the photo's edge rows untouched
    whole, _ = paste(frames, blend_mask(None, None), photo, CropSquare(100, 100, 200))
    assert int(whole[0, 100, 150:250].max()) == 0 and int(whole[0, 200, 200].min()) == 255
    assert float(whole[0, 100:300, 150].float().diff(dim=0).abs().max()) <= 2.0 * 255 / (BLEND_FEATHER * 200 / 512)


def test_photo_canvas_makes_odd_sizes_even_and_caps_large_photos():
    odd = np.random.default_rng(1).integers(0, 256, (301, 499, 3), dtype=np.uint8)
    canvas, square, notes = photo_canvas(odd, CropSquare(10, 20, 200))
    assert canvas.shape == (300, 498, 3) and np.array_equal(canvas, odd[:300, :498])
    assert square == CropSquare(10, 20, 200) and notes == ["odd size 499x301 trimmed to 498x300 for H.264"]
    large = np.zeros((2500, 5000, 3), np.uint8)
    canvas, square, notes = photo_canvas(large, CropSquare(1000, -500, 3000))
    assert canvas.shape == (1024, MAX_PHOTO_SIDE, 3)
    assert square == CropSquare(round(1000 * 2048 / 5000), round(-500 * 2048 / 5000), round(3000 * 2048 / 5000))
    assert "capped at 2048 px: 5000x2500 → 2048x1024" in notes[0]


def _avatar_with_photo(photo: np.ndarray, square: CropSquare, size: int = 64) -> Avatar:
    from r3dp_core.standins import synthetic_avatar

    avatar = synthetic_avatar(size)
    segmap = torch.zeros(1, 6, size, size)
    segmap[:, 0] = 1
    return dataclasses.replace(avatar, segmap=segmap, photo=torch.from_numpy(photo),
                               photo_square=torch.tensor([square.left, square.top, square.side]))


def test_avatar_keeps_the_photo_through_save_and_load(tmp_path):
    photo = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    avatar = _avatar_with_photo(photo, CropSquare(-5, 3, 30))
    loaded = Avatar.load(avatar.save(tmp_path / "a"))
    assert torch.equal(loaded.photo, avatar.photo) and loaded.photo.dtype == torch.uint8
    assert loaded.photo_square.tolist() == [-5, 3, 30]
    older = Avatar.load(dataclasses.replace(avatar, photo=None, photo_square=None).save(tmp_path / "old"))
    with pytest.raises(InputError, match="no photo to paste into.*Image → Triplane"):
        PasteBackSource(_FakeComposite(1, 64), older)


@dataclasses.dataclass
class _Chunk:
    image: torch.Tensor
    person_mask: torch.Tensor


class _FakeComposite:
    def __init__(self, frames: int, size: int):
        self.num_frames, self.size, self.pulled = frames, size, []

    def chunk(self, start, stop, trace=None):
        self.pulled.append((start, stop))
        count = stop - start
        return _Chunk(torch.full((count, 3, self.size, self.size), 0.5), _person(count, self.size))


def test_paste_back_stage_streams_chunks_at_the_photos_size():
    from r3dp_core.pipeline.stream import iterate_chunks

    photo = np.random.default_rng(3).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    source = PasteBackSource(_FakeComposite(5, 64), _avatar_with_photo(photo, CropSquare(60, 10, 90)))
    chunks = list(iterate_chunks(source, 2))
    assert source.composite.pulled == [(0, 2), (2, 4), (4, 5)]
    images = np.concatenate([c.image for _, _, c in chunks])
    masks = torch.cat([c.mask for _, _, c in chunks])
    assert images.shape == (5, 120, 200, 3) and images.dtype == np.uint8
    outside = (masks == 0).numpy()
    assert np.array_equal(images[outside], np.broadcast_to(photo, images.shape)[outside])
    assert np.all(images[(masks == 1).numpy()] == round(0.75 * 255))   # 0.5 in [-1,1]


class _LiveStorage(TorchDispatchMode):
    """Bytes of the tensor storages allocated inside the block and alive at the same time (current and peak), by
    watching every op: an output whose storage no input shares is a new allocation, alive while any tensor the
    block saw on it is."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.holders: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._watch(tensor, inputs)
        return out

    def _watch(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or (key not in self.holders and key in inputs):   # empty, or a view of a tensor made outside
            return
        if key not in self.holders:
            self.holders[key], self.sizes[key] = 0, storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            self.largest = max(self.largest, storage.nbytes())
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            del self.holders[key]
            self.live -= self.sizes.pop(key)


def _list_then_concatenate(frames, avatar, person, background, chunk):
    """The Paste Back node's clip loop before issue #23: a list of pasted chunks, then their concatenation."""
    from r3dp_core.images import uint8_to_unit
    from r3dp_core.pipeline.paste_back import avatar_placement, paste_frames, source_person_mask

    photo, square = avatar_placement(avatar)
    base = background[..., :3].float() if background is not None else uint8_to_unit(photo.cpu()[None])
    count = max(frames.shape[0], base.shape[0] if base.shape[0] > 1 else 0)
    images, masks = [], []
    for start in range(0, count, chunk):
        index = torch.arange(start, min(start + chunk, count))
        clip = frames[index.clamp(max=frames.shape[0] - 1)].permute(0, 3, 1, 2).float()
        clip_person = person[index.clamp(max=person.shape[0] - 1)][:, None]
        base_chunk = base[index.clamp(max=base.shape[0] - 1)] if base.shape[0] > 1 else base
        pasted, mask = paste_frames(clip[:, :3], clip_person, source_person_mask(avatar), base_chunk, square)
        images.append(pasted)
        masks.append(mask)
    return torch.cat(images), torch.cat(masks)


def test_paste_clip_holds_the_clip_once_and_equals_the_list_then_concatenate_version(monkeypatch):
    from r3dp_core.pipeline import paste_back

    monkeypatch.setattr(paste_back, "PASTE_CHUNK", 2)
    photo = np.random.default_rng(5).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    avatar = _avatar_with_photo(photo, CropSquare(40, 10, 90))
    frames = torch.rand(48, 64, 64, 3)
    person = _person(48, 64)[:, 0]
    frame_bytes = 120 * 200 * (3 + 1) * 4                      # an image [H,W,3] and its mask [H,W], float32
    clip_bytes, chunk_bytes = 48 * frame_bytes, 2 * frame_bytes
    with _LiveStorage() as new:
        images, masks = paste_back.paste_clip(frames, avatar, person)
    with _LiveStorage() as old:
        expected_images, expected_masks = _list_then_concatenate(frames, avatar, person, None, 2)
    assert images.shape == (48, 120, 200, 3) and images.dtype == torch.float32 and masks.shape == (48, 120, 200)
    assert torch.equal(images, expected_images) and torch.equal(masks, expected_masks)
    assert bool((masks == 1).any()) and bool((masks == 0).any())
    # the accounting sees the old loop hold the clip twice (its chunks, then their concatenation) ...
    assert old.peak - clip_bytes >= 0.95 * clip_bytes
    # ... and the new one allocate it once: besides it only a chunk's intermediates are alive, whatever T is
    assert new.largest == 48 * 120 * 200 * 3 * 4
    assert 0 <= new.peak - clip_bytes <= 5 * chunk_bytes, ((new.peak - clip_bytes) / chunk_bytes, old.peak / clip_bytes)
    # chained into frames of a previous paste (longer than this clip: the clip holds its last frame)
    short = frames[:37] * 0.5
    with _LiveStorage() as chained:
        two, two_masks = paste_back.paste_clip(short, avatar, person[:37], images)
    expected_two, expected_two_masks = _list_then_concatenate(short, avatar, person[:37], images, 2)
    assert two.shape == (48, 120, 200, 3) and not torch.equal(two, images)
    assert torch.equal(two, expected_two) and torch.equal(two_masks, expected_two_masks)
    assert chained.peak - clip_bytes <= 5 * chunk_bytes
