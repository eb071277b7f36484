"""Draw docs/paste_back.png: the photo | the animated 512² square | the square pasted back into the photo.

    python docs/make_paste_back_figure.py [--shared ../shared]

Runs the real pipeline (framing, 3DMM fit, tri-plane, render, HTB-SR, paste-back) on a models folder of synthetic
stand-ins (random weights, so the animated head is not a likeness), for one frame of a 2:1 photo.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from r3dp_core.device import Precision
from r3dp_core.geometry.camera import static_pose
from r3dp_core.parity.synthetic_job import face_masks, write_models_folder
from r3dp_core.pipeline.frame_chain import talking_frames
from r3dp_core.pipeline.generate import load_job_models
from r3dp_core.pipeline.paste_back import PasteBackSource
from r3dp_core.pipeline.request import GenerateRequest
from r3dp_core.pipeline.stages import PortraitMasks, make_avatar, prepare_source
from r3dp_core.pipeline.types import Motion

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "paste_back.png")
    args = parser.parse_args(argv)
    portrait = cv2.cvtColor(cv2.imread(str(args.shared / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = write_models_folder(Path(tmp) / "models", args.shared)
        head, body = face_masks(portrait, models_dir / "face_landmarker.task")
        pad = ((0, 0), (256, 256))
        photo = np.pad(portrait, pad + ((0, 0),), mode="edge")                       # 1024x512
        masks = PortraitMasks(*(torch.from_numpy(np.pad(m, pad)).float() / 255 for m in (head, body)))
        request = GenerateRequest(image=Path("photo.png"), out=Path("unused.mp4"), head_mask=Path("head.png"),
                                  expression_video=Path("unused.mp4"))
        models = load_job_models(request, models_dir, Precision.resolve("cpu", "fp32"))
        with torch.inference_mode():
            avatar = make_avatar(models.video_model, prepare_source(photo, models.kit, masks=masks))
            motion = Motion(exp=avatar.exp.clone())
            frames = talking_frames(models.video_model, models.kit.geometry, avatar, motion,
                                    static_pose(avatar.euler, avatar.trans, 1))
            crop = frames.chunk(0, 1).image
            pasted = PasteBackSource(frames, avatar).chunk(0, 1).image[0]
    square = ((crop[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    height = 256
    panels = [cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)
              for image in (photo, square, pasted)]
    gap = np.full((height, 8, 3), 255, np.uint8)
    figure = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({figure.shape[1]}x{figure.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
