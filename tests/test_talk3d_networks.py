"""Talk3D checkpoint container: the five modules + null_vector load the flat official state dict strictly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from r3dp_core.errors import ModelFileError
from r3dp_core.talk3d import Talk3DConfig, Talk3DNetworks, flatten_checkpoint, load_talk3d
from r3dp_core.talk3d.model import MODULES


def test_synthetic_talk3d_weights_load_strictly_with_the_manifest_parameter_count(synth_state_dict):
    weights = synth_state_dict("talk3d")
    model = load_talk3d(weights)
    assert not model.training
    state = model.state_dict()
    assert len(state) == len(weights) == 426
    assert sum(p.numel() for p in model.parameters()) == 17_586_277
    per_module = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in MODULES}
    assert per_module == {"deltaplane_predictor": 17_512_000, "blink_encoder": 10_496, "camera_encoder": 25_792,
                          "audio_net": 34_240, "audio_att_net": 3_685}
    assert torch.equal(model.null_vector, weights["null_vector"])
    assert tuple(model.null_vector.shape) == (1, 1, 64)


def test_nested_official_checkpoint_flattens_and_loads(synth_state_dict):
    flat = synth_state_dict("talk3d")
    nested = {name: {k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + ".")} for name in MODULES}
    nested.update(null_vector=flat["null_vector"], epoch=3, iter=5000, optimizer={"state": {}}, scheduler={})
    assert flatten_checkpoint(nested).keys() == flat.keys()
    model = load_talk3d(nested)
    torch.testing.assert_close(model.audio_net.encoder_conv[0].weight, flat["audio_net.encoder_conv.0.weight"])
    broken = dict(flat)
    del broken["deltaplane_predictor.transformer.0.pos_emb"]
    with pytest.raises(ModelFileError, match="1 missing"):
        load_talk3d(broken)


def test_config_defaults_are_the_official_values_and_are_checked():
    config = Talk3DConfig()
    assert (config.token_dim, config.audio_classes, config.audio_window, config.audio_context) == (64, 44, 16, 8)
    assert (config.eye_frequencies, config.angle_frequencies, config.landmark_frequencies) == (16, 10, 6)
    assert (config.down_channels, config.up_channels, config.bottleneck_resolution) == ((64, 128, 256),
                                                                                        (128, 64, 32), 32)
    assert (config.attention_heads, config.attention_head_dim, config.transformer_layers) == (4, 64, 2)
    assert config.unet_leaky_slope == 0.01 and config.audio_leaky_slope == 0.02 and config.num_tokens == 5
    with pytest.raises(ValueError, match="up_channels"):
        Talk3DNetworks(dataclasses.replace(config, up_channels=(128, 64, 16)))
    with pytest.raises(ValueError, match="audio_window"):
        Talk3DNetworks(dataclasses.replace(config, audio_window=8))
