"""The Talk3D stand-ins (``standins.write_talk3d_models``): the files land in their slots and every loader reads
them; the tiny generator renders finite 64² frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from r3dp_core import model_files
from r3dp_core.checkpoint import load_checkpoint, load_into
from r3dp_core.standins import TINY_EG3D_METADATA, tiny_eg3d_generator, write_talk3d_models
from r3dp_core.talk3d.audio_features import find_wav2vec2, load_wav2vec2_folder, stream_logits
from r3dp_core.talk3d.eg3d_generator import TriPlaneGenerator, tiny_config


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return folder, write_talk3d_models(folder)


def test_files_are_in_their_slots(written):
    folder, paths = written
    assert set(paths) == {"eg3d_ffhq", "wav2vec2"}
    assert model_files.BY_KEY["eg3d_ffhq"].find(folder) == paths["eg3d_ffhq"]     # an alternative of the slot
    assert paths["wav2vec2"] == folder / model_files.BY_KEY["wav2vec2"].relpath
    assert find_wav2vec2(folder) == paths["wav2vec2"]


def test_generator_loads_strict_and_renders(written):
    _, paths = written
    loaded = load_checkpoint(paths["eg3d_ffhq"])
    assert loaded.metadata == TINY_EG3D_METADATA
    generator = TriPlaneGenerator(tiny_config())
    load_into(generator, loaded.state_dict, str(paths["eg3d_ffhq"]))        # strict keys and shapes
    reference = tiny_eg3d_generator()
    for key, value in reference.state_dict().items():
        assert torch.equal(value, generator.state_dict()[key]), key           # seeded: the same weights again
    generator.eval()
    with torch.no_grad():
        ws = generator.mapping(torch.randn(1, generator.config.z_dim, generator=torch.Generator().manual_seed(0)))
        assert ws.shape == (1, generator.num_ws, generator.config.w_dim)
        planes = generator.synthesize_planes(ws)
        out = generator.render(planes, ws, generator.cameras(0.0, 0.0), generator=torch.Generator().manual_seed(0))
    assert out.image.shape == (1, 3, 64, 64)
    assert torch.isfinite(out.image).all() and torch.isfinite(out.image_raw).all()


def test_wav2vec2_folder_loads_and_streams(written):
    _, paths = written
    model_files.check_wav2vec2_folder(paths["wav2vec2"])
    model = load_wav2vec2_folder(paths["wav2vec2"])
    assert model.config.vocab_size == model_files.WAV2VEC2_LOGIT_DIM
    seconds = 1.0
    wave = (0.1 * np.sin(np.arange(int(16000 * seconds)) * 0.07)).astype(np.float32)
    logits = stream_logits(model, wave)
    assert logits.shape[1] == model_files.WAV2VEC2_LOGIT_DIM
    assert abs(logits.shape[0] - 50 * seconds) <= 1                     # one row per 20 ms
    assert torch.isfinite(logits).all()
