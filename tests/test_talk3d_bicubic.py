"""Talk3D loss helpers: the ×4 bicubic down-sampler, the mouth-mask rounding and the mouth L2 term."""

from __future__ import annotations

import json

import torch

from r3dp_core.parity import run_case
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.stage_t3d_bicubic import run as run_bicubic
from r3dp_core.talk3d import BicubicDownSample, mouth_l2_loss, mouth_mask_128
from r3dp_core.talk3d.losses import bicubic_kernel


def test_kernel_is_normalised_symmetric_and_dyadic():
    k = bicubic_kernel(4)
    assert k.shape == (16,) and k.dtype == torch.float32
    torch.testing.assert_close(k, k.flip(0), rtol=0, atol=0)
    assert float(k.double().sum()) == 1.0
    torch.testing.assert_close(k.double(), bicubic_kernel(4, dtype=torch.float64), rtol=0, atol=0)


def test_downsample_keeps_constants_and_filters_rows_then_columns():
    down = BicubicDownSample(4)
    flat = torch.full((2, 3, 64, 48), 0.25)
    torch.testing.assert_close(down(flat), torch.full((2, 3, 16, 12), 0.25))
    x = torch.randn(1, 3, 32, 32)
    # separable: transposing the input transposes the output; channels are independent
    torch.testing.assert_close(down(x.transpose(-1, -2)), down(x).transpose(-1, -2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(down(x[:, :1]), down(x)[:, :1], rtol=1e-6, atol=1e-6)


def test_mouth_mask_rounds_half_to_even_and_counts_three_channels():
    down = BicubicDownSample(4)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 22:44, 16:48] = 1                 # row 22 is the centre of output row 5 (4·5 + 1.5)
    rounded = mouth_mask_128(mask, down)
    assert rounded.dtype == torch.uint8 and rounded.shape == (1, 3, 16, 16)
    assert torch.equal(rounded, torch.round(down(mask.repeat(1, 3, 1, 1))).to(torch.uint8))
    # the straight mask edge centred under the symmetric kernel gives exactly 0.5, which rounds to 0
    assert down(mask)[0, 0, 5, 7] == 0.5 and rounded[0, :, 5, 7].eq(0).all() and rounded[0, :, 6, 7].eq(1).all()
    pred, target = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    w = rounded.float()
    expected = ((pred - target) ** 2 * w).sum() / w.sum()
    torch.testing.assert_close(mouth_l2_loss(pred, target, rounded), expected)


def test_parity_with_official_bicubic_downsample(parity_dir):
    report = run_case(parity_dir / "case_t3d_bicubic.safetensors")
    assert report.passed, report.summary()
    assert {c.name for c in report.checks} == {"kernel", "img_128", "mask_128", "mouth_mask_128"}
    meta = json.loads((parity_dir / "case_t3d_bicubic.json").read_text())["tensors"]["mouth_mask_128"]
    case = ParityCase.load(parity_dir / "case_t3d_bicubic.safetensors")
    with torch.no_grad():
        out = run_bicubic(case)
    assert out["mouth_mask_128"].flatten(1).sum(1).tolist() == meta["num_mouth_px_128"]
    one = ParityCase(path=case.path, meta=case.meta, stored=dict(case.stored))   # any batch: item 1 alone
    one.stored["img_u8"], one.stored["mask_u8"] = case.stored["img_u8"][1:], case.stored["mask_u8"][1:]
    with torch.no_grad():
        single = run_bicubic(one)
    torch.testing.assert_close(single["img_128"], out["img_128"][1:], rtol=1e-6, atol=1e-6)
