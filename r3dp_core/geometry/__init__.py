"""Everything between the pixels and the networks that is not a checkpoint, in plain PyTorch.

``bfm`` (the BFM 3DMM), ``landmarks`` (MediaPipe face landmarks), ``fitting`` (3DMM fits to landmarks),
``rasterizer`` and ``secc`` (SECC/PNCC images), ``blink`` (the official periodic blink schedule), ``secc_edit``
(blink and mouth editing), ``camera`` (the 25-number camera, pose smoothing and camera paths), ``keypoints``
(torso keypoints), ``segmentation``, ``inpaint`` and ``crop`` (masks, background and torso inpainting, the
official crop). Import the modules themselves; this package exports nothing, so importing one module does not
load the others.
"""
