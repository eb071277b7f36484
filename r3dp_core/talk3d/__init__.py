"""Talk3D (Ko et al., 2024): audio-driven talking heads on a personalised EG3D tri-plane.

The trained networks (conditioning-token encoders and the Deltaplane U-Net), the checkpoint container and the
loss helpers of the training code; the EG3D generator and renderer are separate modules of this package.
"""

from .config import Talk3DConfig
from .deltaplane import DeltaplanePredictor, aware3d, triplane_position_embedding
from .losses import BicubicDownSample, mouth_l2_loss, mouth_mask_128
from .model import Talk3DNetworks, flatten_checkpoint, load_talk3d
from .tokens import AudioAttNet, AudioNet, BlinkEncoder, CameraEncoder, aud_eo_to_features, audio_windows

__all__ = [
    "AudioAttNet", "AudioNet", "BicubicDownSample", "BlinkEncoder", "CameraEncoder", "DeltaplanePredictor",
    "Talk3DConfig", "Talk3DNetworks", "aud_eo_to_features", "audio_windows", "aware3d", "flatten_checkpoint",
    "load_talk3d", "mouth_l2_loss", "mouth_mask_128", "triplane_position_embedding",
]
