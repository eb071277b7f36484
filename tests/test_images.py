"""The image-layout conversions (``r3dp_core.images``): one rounding rule each way, on tensors and arrays alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError
from r3dp_core.images import (
    as_uint8_frames,
    comfy_to_uint8,
    to_comfy_image,
    to_uint8_hwc,
    u8_image_to_tensor,
    uint8_to_unit,
    unit_to_uint8,
)


def test_unit_to_uint8_rounds_clips_and_gives_back_loaded_bytes():
    u8 = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unit_to_uint8(uint8_to_unit(u8)), u8)                 # u8/255 → the same bytes
    values = np.array([-0.5, 0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 0.5, 1.0, 2.0], np.float32)
    expected = np.array([0, 0, 0, 1, 2, 128, 255, 255], np.uint8)          # half to even, like np.rint
    assert np.array_equal(unit_to_uint8(values), expected)
    assert torch.equal(unit_to_uint8(torch.from_numpy(values)), torch.from_numpy(expected))


def test_comfy_images_lose_alpha_and_grey_becomes_rgb():
    rgba = torch.rand(2, 4, 5, 4)
    assert np.array_equal(comfy_to_uint8(rgba), as_uint8_frames(rgba[..., :3]))
    grey = torch.rand(4, 5, 1)
    rgb = comfy_to_uint8(grey)
    assert rgb.shape == (4, 5, 3) and (rgb == rgb[..., :1]).all()
    with pytest.raises(InputError, match="RGB images"):
        as_uint8_frames(rgba)


def test_network_layout_round_trips_through_uint8():
    u8 = torch.randint(0, 256, (2, 6, 7, 3), dtype=torch.uint8)
    x = u8_image_to_tensor(u8)
    assert x.shape == (2, 3, 6, 7) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8_hwc(x), u8.numpy())
    assert np.array_equal(unit_to_uint8(to_comfy_image(x)).numpy(), u8.numpy())
