"""Image quality metrics (r3dp_core.metrics)."""

import math

import pytest
import torch

from r3dp_core.metrics import psnr


def test_psnr_of_images_in_minus_one_to_one():
    image = torch.zeros(1, 3, 4, 4)
    assert psnr(image, image) == math.inf
    # An error of 0.02 everywhere in [-1,1] is 0.01 in [0,1]: 40 dB.
    assert psnr(image + 0.02, image) == pytest.approx(40.0)
    # the mean square error over every pixel: a quarter of the pixels off by 0.04 is the same 40 dB
    sparse = image.clone()
    sparse[..., :1, :] = 0.04
    assert psnr(sparse, image) == pytest.approx(40.0)
