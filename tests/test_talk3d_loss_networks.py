"""Talk3D's loss networks (LPIPS-alex, ArcFace IR-SE50, Wav2Lip SyncNet) load files in the official key layouts strictly
and compute what the official losses compute. The files are real ``torch.save`` files of full-size networks with
deterministic random weights, written in the official layouts (the AlexNet file with its unused classifier, the
ArcFace file without BatchNorm counters as old PyTorch saved it, the SyncNet checkpoint with ``module.`` prefixes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from r3dp_core import model_files
from r3dp_core.errors import InputError, ModelFileError
from r3dp_core.model_import import LOSS_NETWORK_SLOTS as IMPORTED_SLOTS
from r3dp_core.model_import import import_models
from r3dp_core.talk3d.loss_networks import (
    LOSS_NETWORK_SLOTS,
    LPIPS,
    IdentityEncoder,
    LossNetworks,
    SyncNet,
    identify_file,
    load_loss_networks,
    sync_loss,
    sync_probability,
    wav2lip_mel,
)
from r3dp_core.talk3d.loss_networks.arcface import adaptive_average_pool
from r3dp_core.talk3d.loss_networks.lpips import ALEXNET_CHANNELS

SLOT_PATHS = {key: model_files.BY_KEY[key].relpath for key in LOSS_NETWORK_SLOTS}


def _randomised(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's state dict with every float tensor drawn from ``seed``: conv/linear weights scaled by fan-in,
    BatchNorm statistics and affine terms away from their identity values, so that a wrongly mapped key shows."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if not value.dtype.is_floating_point:
            state[key] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * noise
        elif value.ndim == 1:                                  # BatchNorm / PReLU weights
            state[key] = 1 + 0.1 * noise if "prelu" not in key else 0.25 + 0.05 * noise
        else:
            state[key] = noise / math.sqrt(value[0].numel())
    return state


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A models folder with the four loss-network files in their slots, and the tensors written to each."""
    models = tmp_path_factory.mktemp("models")
    (models / "loss").mkdir()
    torch.manual_seed(0)
    lpips = _randomised(LPIPS(), 1)
    alexnet = {key: value for key, value in lpips.items() if key.startswith("features.")}
    classifier = {f"classifier.{i}.{p}": torch.zeros(2) for i in (1, 4, 6) for p in ("weight", "bias")}  # unused
    torch.save(alexnet | classifier, models / SLOT_PATHS["lpips_alexnet"])
    generator = torch.Generator().manual_seed(2)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)   # non-negative, as the official
             for i, c in enumerate(ALEXNET_CHANNELS)}
    torch.save(heads, models / SLOT_PATHS["lpips_alex"])
    arcface = {k: v for k, v in _randomised(IdentityEncoder(), 3).items() if not k.endswith("num_batches_tracked")}
    torch.save(arcface, models / SLOT_PATHS["arcface_ir_se50"])
    syncnet = _randomised(SyncNet(), 4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in syncnet.items()}, "optimizer": None, "global_step": 1,
                "global_epoch": 0}, models / SLOT_PATHS["wav2lip_syncnet"])
    return models, {"alexnet": alexnet, "heads": heads, "arcface": arcface, "syncnet": syncnet}


@pytest.fixture(scope="module")
def networks(official) -> LossNetworks:
    said = []
    loaded = load_loss_networks(official[0], "cpu", say=said.append)
    assert len(said) == 1 and "research and non-commercial use only" in said[0]   # the SyncNet licence, once
    return loaded


def _images(seed: int, batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------------ loading

def test_every_file_loads_strictly_under_its_official_keys(networks, official):
    _, written = official
    assert networks.terms() == ["lpips", "identity", "sync"]
    lpips, identity, sync = networks.lpips, networks.identity, networks.sync
    assert torch.equal(lpips.features[8].weight, written["alexnet"]["features.8.weight"])
    assert torch.equal(lpips.lin3.model[1].weight, written["heads"]["lin3.model.1.weight"])
    assert torch.equal(identity.body[23].res_layer[5].fc2.weight, written["arcface"]["body.23.res_layer.5.fc2.weight"])
    assert torch.equal(identity.output_layer[4].running_var, written["arcface"]["output_layer.4.running_var"])
    assert torch.equal(sync.audio_encoder[13].conv_block[1].running_mean,
                       written["syncnet"]["audio_encoder.13.conv_block.1.running_mean"])
    for network in (lpips, identity, sync):
        network.train()                      # a training loop switching everything to training mode
        assert not network.training and not any(p.requires_grad for p in network.parameters())


def test_identify_file_names_each_slot_by_its_keys(official):
    models, _ = official
    assert {identify_file(models / path)[0] for path in SLOT_PATHS.values()} == set(LOSS_NETWORK_SLOTS)
    assert tuple(IMPORTED_SLOTS) == LOSS_NETWORK_SLOTS


def test_a_missing_file_leaves_its_term_out_and_says_so_once(tmp_path, official):
    said = []
    empty = load_loss_networks(tmp_path, "cpu", say=said.append)
    assert empty.terms() == [] and (empty.lpips, empty.identity, empty.sync) == (None, None, None)
    assert len(said) == 4
    by_file = {key: next(line for line in said if str(tmp_path / path) in line) for key, path in SLOT_PATHS.items()}
    assert "r3dp models fetch --talk3d" in by_file["lpips_alexnet"]
    assert "download.pytorch.org/models/alexnet-owt-7be5be79.pth" in by_file["lpips_alexnet"]
    assert "PerceptualSimilarity/v0.1.4" in by_file["lpips_alex"]
    assert "LPIPS (perceptual) term" in by_file["lpips_alex"]
    assert "pSp/e4e" in by_file["arcface_ir_se50"] and "r3dp models import PATH" in by_file["arcface_ir_se50"]
    assert "identity (ArcFace) term" in by_file["arcface_ir_se50"]
    assert "Wav2Lip" in by_file["wav2lip_syncnet"] and "research/non-commercial" in by_file["wav2lip_syncnet"]

    models, _ = official
    partial = tmp_path / "partial"
    (partial / "loss").mkdir(parents=True)
    (partial / SLOT_PATHS["lpips_alex"]).symlink_to(models / SLOT_PATHS["lpips_alex"])
    (partial / SLOT_PATHS["arcface_ir_se50"]).symlink_to(models / SLOT_PATHS["arcface_ir_se50"])
    said.clear()
    some = load_loss_networks(partial, "cpu", say=said.append)
    assert some.terms() == ["identity"] and len(said) == 2
    assert "alexnet-owt-7be5be79.pth" in said[0] and "lipsync_expert.pth" in said[1]


def test_a_file_with_other_keys_is_refused_naming_it(tmp_path, official):
    models, written = official
    folder = tmp_path / "wrong"
    (folder / "loss").mkdir(parents=True)
    renamed = {k.replace("res_layer", "residual"): v for k, v in written["arcface"].items()}
    torch.save(renamed, folder / SLOT_PATHS["arcface_ir_se50"])
    with pytest.raises(ModelFileError, match=r"model_ir_se50\.pth is not the ArcFace IR-SE50 .* missing"):
        load_loss_networks(folder, "cpu", say=lambda line: None)
    # VGG-sized LPIPS heads in the AlexNet heads' slot: the shapes differ
    vgg = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    (folder / SLOT_PATHS["arcface_ir_se50"]).unlink()
    torch.save(vgg, folder / SLOT_PATHS["lpips_alex"])
    (folder / SLOT_PATHS["lpips_alexnet"]).symlink_to(models / SLOT_PATHS["lpips_alexnet"])
    with pytest.raises(ModelFileError, match=r"lpips_alex_v0\.1\.pth is not the LPIPS v0\.1 .*wrong shape"):
        load_loss_networks(folder, "cpu", say=lambda line: None)


# --------------------------------------------------------------------------------------------------------- LPIPS

def _reference_lpips(x, y, alexnet, heads):
    """lpips v0.1 written out with F.* on the file's tensors (no module structure shared with the code)."""
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)

    def relus(image):
        h = (image - shift) / scale
        outs = []
        for index, (stride, padding, pool) in zip((0, 3, 6, 8, 10), ((4, 2, True), (1, 2, True), (1, 1, False),
                                                                     (1, 1, False), (1, 1, False))):
            h = F.relu(F.conv2d(h, alexnet[f"features.{index}.weight"], alexnet[f"features.{index}.bias"],
                                stride=stride, padding=padding))
            outs.append(h)
            if pool:
                h = F.max_pool2d(h, 3, 2)
        return outs

    total = 0
    for layer, (a, b) in enumerate(zip(relus(x), relus(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((a - b) ** 2, heads[f"lin{layer}.model.1.weight"]).mean((1, 2, 3))
    return total


def test_lpips_is_the_official_distance(networks, official):
    lpips, written = networks.lpips, official[1]
    x, y = _images(10), _images(11)
    x.requires_grad_(True)
    distance = lpips(x, y)
    assert distance.shape == (2,)
    assert torch.allclose(distance, _reference_lpips(x, y, written["alexnet"], written["heads"]), rtol=1e-5)
    assert (distance > 0).all()
    assert torch.allclose(lpips(y, x), distance, rtol=1e-6)                 # symmetric
    assert torch.equal(lpips(y, y), torch.zeros(2))                         # an image against itself
    distance.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0                    # a loss: gradients reach the image
    with pytest.raises(InputError, match="same shape"):
        lpips(x, y[:, :, :32])


# ------------------------------------------------------------------------------------------------------ identity

def test_identity_embeddings_are_unit_and_per_image(networks):
    encoder = networks.identity
    images = torch.cat([_images(20, batch=2), _images(20, batch=1)])       # the third image equals the first
    with torch.no_grad():
        embedding = encoder(images)
        alone = encoder(images[1:2])
    assert embedding.shape == (3, 512)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(embedding[0], embedding[2], atol=1e-6)
    assert float(embedding[0] @ embedding[1]) < 0.999
    # BatchNorm uses its running statistics: an image's embedding does not depend on its batch
    assert torch.allclose(alone[0], embedding[1], atol=1e-5)
    # any size is pooled to 112² first (Talk3D's IDLoss: AdaptiveAvgPool2d(112) of the whole image)
    with torch.no_grad():
        pooled = encoder(F.adaptive_avg_pool2d(_images(21, batch=1, size=200), 112))
        assert torch.allclose(encoder(_images(21, batch=1, size=200)), pooled, atol=1e-5)


@pytest.mark.parametrize("size", [512, 200, 64])
def test_the_pooling_is_torchs_adaptive_average_pooling(size):
    image = _images(22, batch=2, size=size)
    np.testing.assert_allclose(adaptive_average_pool(image, 112), F.adaptive_avg_pool2d(image, 112), atol=1e-6)


# ------------------------------------------------------------------------------------------------------- SyncNet

def test_syncnet_embeddings_probability_and_loss(networks):
    sync = networks.sync
    generator = torch.Generator().manual_seed(30)
    mel = torch.rand(3, 1, 80, 16, generator=generator) * 8 - 4
    faces = torch.rand(3, 15, 48, 96, generator=generator)
    with torch.no_grad():
        audio, face = sync(mel, faces)
        single_audio, single_face = sync(mel[:1], faces[:1])
    for embedding in (audio, face):
        assert embedding.shape == (3, 512) and (embedding >= 0).all()
        assert torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(single_audio[0], audio[0], atol=1e-5) and torch.allclose(single_face[0], face[0], atol=1e-5)
    probability = sync_probability(audio, face)
    assert probability.shape == (3,) and ((probability >= 0) & (probability <= 1)).all()
    assert torch.allclose(probability, (audio * face).sum(1).clamp(0, 1), atol=1e-6)
    assert torch.allclose(sync_loss(audio, face), -probability.log().mean(), rtol=1e-5)
    assert float(sync_loss(audio, audio)) < 1e-5                            # in sync: probability 1, no loss
    # the official trainer's BatchNorm uses batch statistics: then a window's embedding depends on its batch
    sync.batch_statistics = True
    try:
        with torch.no_grad():
            assert not torch.allclose(sync(mel[:2], faces[:2])[1][0], sync(mel, faces)[1][0], atol=1e-4)
    finally:
        sync.batch_statistics = False
    with pytest.raises(InputError, match=r"\[B,1,80,16\]"):
        sync(mel[:, :, :, :8], faces)
    with pytest.raises(InputError, match="one per mel window"):
        sync(mel, faces[:2])


# ---------------------------------------------------------------------------------------------------------- mel

def _slaney_mel_filters(sr=16000, n_fft=800, n_mels=80, fmin=55.0, fmax=7600.0) -> np.ndarray:
    """The Slaney-normalised mel filter bank, from its definition (linear below 1 kHz, logarithmic above)."""
    def hz_to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz >= 1000, 15 + np.log(np.maximum(hz, 1e-10) / 1000) / (np.log(6.4) / 27), hz / (200 / 3))

    def mel_to_hz(mel):
        return np.where(mel >= 15, 1000 * np.exp((np.log(6.4) / 27) * (mel - 15)), mel * (200 / 3))

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    filters = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        rising = (bins - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        filters[m] = np.maximum(0, np.minimum(rising, falling)) * 2 / (edges[m + 2] - edges[m])
    return filters


def _reference_mel_column(wav: np.ndarray, column: int) -> np.ndarray:
    """One column of Wav2Lip's melspectrogram from the definition, numpy only (zero-padded centred frames)."""
    emphasised = np.concatenate([wav[:1], wav[1:] - 0.97 * wav[:-1]]).astype(np.float64)
    padded = np.pad(emphasised, 400)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)          # periodic Hann
    magnitude = np.abs(np.fft.rfft(padded[column * 200:column * 200 + 800] * window))
    decibels = 20 * np.log10(np.maximum(1e-5, _slaney_mel_filters() @ magnitude)) - 20
    return np.clip(8 * (decibels + 100) / 100 - 4, -4, 4)


def test_wav2lip_mel_shape_and_values():
    rng = np.random.default_rng(40)
    t = np.arange(16000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    mel = wav2lip_mel(wav)
    assert mel.shape == (80, 81) and mel.dtype == np.float32
    assert mel.min() >= -4 and mel.max() <= 4 and mel.std() > 0.1
    for column in (0, 40, 80):                                              # both padded ends and the middle
        np.testing.assert_allclose(mel[:, column], _reference_mel_column(wav, column), atol=2e-4)
    assert wav2lip_mel(np.zeros(16000, np.float32)).max() == -4             # silence: the floor
    with pytest.raises(InputError, match="1-D"):
        wav2lip_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(InputError, match="float samples"):
        wav2lip_mel(np.zeros(16000, np.int16))                             # PCM integers: another scale


# --------------------------------------------------------------------------------------------- slots and import

def test_the_slots_are_personalisation_only_with_sources_and_licences():
    specs = {key: model_files.BY_KEY[key] for key in LOSS_NETWORK_SLOTS}
    assert all(spec.required_for == ("personalise",) and spec.talk3d_only for spec in specs.values())
    assert specs["lpips_alexnet"].fetchable and specs["lpips_alex"].fetchable
    assert specs["lpips_alexnet"].sha256.startswith("7be5be79") and specs["lpips_alex"].size_bytes == 6009
    assert not specs["arcface_ir_se50"].fetchable and not specs["wav2lip_syncnet"].fetchable
    assert "BSD-3" in specs["lpips_alexnet"].licence and "BSD-2" in specs["lpips_alex"].licence
    assert "research" in specs["arcface_ir_se50"].licence
    assert "non-commercial use ONLY" in specs["wav2lip_syncnet"].licence


def test_models_import_recognises_each_file_by_its_keys(tmp_path, official):
    models, written = official
    download = tmp_path / "download"
    download.mkdir()
    for index, path in enumerate(SLOT_PATHS.values()):                      # names that say nothing
        (download / f"weights_{index}.pth").symlink_to(models / path)
    torch.save({"state_dict": {"face_encoder.0.conv_block.0.weight": torch.zeros(1)}},
               download / "lipsync_expert.pth")                             # the right name, the wrong weights
    target = tmp_path / "models"
    report = import_models(download, target, link=True)
    assert {key for key, _, _ in report.placed} == set(LOSS_NETWORK_SLOTS)
    for key in LOSS_NETWORK_SLOTS:
        assert model_files.BY_KEY[key].find(target) is not None
    assert any(path.name == "lipsync_expert.pth" and "named like Wav2Lip's lip-sync expert" in reason
               for path, reason in report.skipped)
    assert load_loss_networks(target, "cpu", say=lambda line: None).terms() == ["lpips", "identity", "sync"]
