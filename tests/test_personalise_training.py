"""Phase B of ``r3dp personalise`` on the tiny preset with a synthetic prepared video: the loss falls, a stopped run
saves and resumes onto the uninterrupted trajectory, checkpoints are complete single files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from r3dp_core.host import Host
from r3dp_core.standins import StandinPrepared, standin_prepared
from r3dp_core.talk3d.eg3d_generator import TriPlaneGenerator
from r3dp_core.talk3d.model import Talk3DNetworks
from r3dp_core.talk3d.personalise.presets import get_preset
from r3dp_core.talk3d.personalise.training import (
    CHECKPOINT_FILE,
    TrainingInterrupted,
    TrainingSetup,
    TrainingState,
    finetune_superresolution,
    load_checkpoint,
    read_loss_log,
    render_frames,
    step_windows,
    sync_clip,
    train_unet,
    window_starts,
)

FRAMES = 40


def _prepared(size: int, generator: TriPlaneGenerator, w_person: torch.Tensor,
              yaw_pitch: torch.Tensor) -> StandinPrepared:
    """Frames of the person's own generator with a fixed change of its tri-plane (what ΔP has to learn)."""
    with torch.no_grad():
        ws = w_person.reshape(1, 1, -1).expand(1, generator.num_ws, -1)
        planes = generator.synthesize_planes(ws)
        change = 0.5 * torch.randn(planes.shape, generator=torch.Generator().manual_seed(7))
        images = generator.render(planes, ws, generator.cameras(yaw_pitch[:, 0], yaw_pitch[:, 1]),
                                  delta_planes=change.expand(FRAMES, -1, -1, -1),
                                  generator=torch.Generator().manual_seed(0)).image
    crops = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    masks = np.zeros((FRAMES, 4, size, size), np.uint8)
    masks[:, 0, 8:56, 12:52] = 1
    masks[:, 1, 40:52, 24:40] = 1
    return standin_prepared(crops, masks=masks)


@pytest.fixture(scope="module")
def setup_parts():
    preset = get_preset("tiny")
    torch.manual_seed(1)
    generator = TriPlaneGenerator(preset.generator).eval().requires_grad_(False)
    w_person = generator.mapping(torch.randn(1, 16))[:, 0].detach()
    yaw_pitch = torch.stack([torch.linspace(-0.2, 0.2, FRAMES), torch.zeros(FRAMES)], -1)
    prepared = _prepared(preset.image_size, generator, w_person, yaw_pitch)
    return preset, prepared, generator, w_person, yaw_pitch


def _setup(parts) -> TrainingSetup:
    preset, prepared, generator, w_person, yaw_pitch = parts
    return TrainingSetup(generator, w_person, yaw_pitch, prepared, preset, loss_networks=None)


def _networks(preset) -> Talk3DNetworks:
    torch.manual_seed(0)
    return Talk3DNetworks(preset.networks)


def test_window_order_is_one_permutation_visited_every_epoch():
    starts = window_starts(30, seed=4)
    assert sorted(starts.tolist()) == list(range(2, 22))           # 2 … N_train − 9
    assert torch.equal(starts, window_starts(30, seed=4))
    first, epoch0 = step_windows(starts, 0, 2)
    again, epoch1 = step_windows(starts, 10, 2)                     # 20 windows = one epoch of 10 steps
    assert first == again == starts[:2].tolist() and (epoch0, epoch1) == (0, 1)
    with pytest.raises(Exception, match="too few"):
        window_starts(10, seed=0)


def test_unet_training_lowers_the_loss_and_logs_every_step(setup_parts, tmp_path):
    preset = setup_parts[0]
    networks = _networks(preset)
    state = train_unet(_setup(setup_parts), networks, tmp_path, 30, state=TrainingState(windows_per_step=1),
                       save_every=1000)
    log = read_loss_log(tmp_path)
    assert state.step == 30 and [entry["step"] for entry in log] == list(range(1, 31))
    first, last = np.mean([e["total"] for e in log[:5]]), np.mean([e["total"] for e in log[-5:]])
    assert last < 0.97 * first, (first, last)      # the tiny random generator responds weakly to ΔP
    assert set(log[0]) == {"step", "l1", "mouth_l2", "total"}        # no loss networks: only the built-in terms
    assert (tmp_path / CHECKPOINT_FILE).exists()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 30


def _train_uninterrupted(folder: Path, steps: int) -> None:
    """The reference run, in this module's setup (called in another process by the resume test)."""
    preset = get_preset("tiny")
    torch.manual_seed(1)
    generator = TriPlaneGenerator(preset.generator).eval().requires_grad_(False)
    w_person = generator.mapping(torch.randn(1, 16))[:, 0].detach()
    yaw_pitch = torch.stack([torch.linspace(-0.2, 0.2, FRAMES), torch.zeros(FRAMES)], -1)
    parts = (preset, _prepared(preset.image_size, generator, w_person, yaw_pitch), generator, w_person, yaw_pitch)
    train_unet(_setup(parts), _networks(preset), folder, steps, state=TrainingState(windows_per_step=1),
               save_every=1000)


def test_stopped_run_saves_and_resumes_onto_the_same_trajectory(setup_parts, tmp_path):
    """The reference runs in another process (the U-Net is not bit-exact across processes); this one is stopped
    at step 3 by a Cancel, then resumed from its checkpoint by fresh networks."""
    preset = setup_parts[0]
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from tests.test_personalise_training import _train_uninterrupted; "
                    "_train_uninterrupted(Path(sys.argv[1]), 8)", str(whole)],
                   check=True, cwd=Path(__file__).resolve().parents[1])

    class Cancelled(Exception):
        pass

    Cancelled.__name__ = "InterruptProcessingException"           # what ComfyUI's Cancel raises
    calls = {"n": 0}

    def stop_at_step_3():
        calls["n"] += 1
        if calls["n"] == 4:
            raise Cancelled()

    split = tmp_path / "split"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_unet(_setup(setup_parts), _networks(preset), split, 8, state=TrainingState(windows_per_step=1),
                   host=Host(should_stop=stop_at_step_3), save_every=1000)
    assert stopped.value.step == 3
    state, tensors = load_checkpoint(split)
    assert state.step == 3
    torch.manual_seed(99)                                          # a fresh process would have other global RNG
    train_unet(_setup(setup_parts), Talk3DNetworks(preset.networks), split, 8, state=state, tensors=tensors,
               save_every=1000)
    reference = [e["total"] for e in read_loss_log(whole)]
    resumed = [e["total"] for e in read_loss_log(split)]
    assert len(resumed) == 8
    np.testing.assert_allclose(resumed, reference, rtol=1e-4)
    final_whole, final_split = load_checkpoint(whole)[1], load_checkpoint(split)[1]
    for key in final_whole:
        if key.startswith("networks."):
            torch.testing.assert_close(final_split[key], final_whole[key], rtol=1e-4, atol=1e-5)


def test_superresolution_finetune_returns_tuned_weights_and_leaves_the_generator(setup_parts):
    preset, _, generator = setup_parts[:3]
    before = {k: v.clone() for k, v in generator.superresolution.state_dict().items()}
    tuned = finetune_superresolution(_setup(setup_parts), _networks(preset), seed=0)
    after = generator.superresolution.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before[k], tuned[k]) for k in before)
    assert not any(p.requires_grad for p in generator.parameters())


def test_renders_are_repeatable_and_delta_changes_them(setup_parts):
    preset, prepared, generator, w_person, yaw_pitch = setup_parts
    networks = _networks(preset)               # random weights: ΔP ≠ 0
    a = render_frames(generator, networks, w_person, prepared, yaw_pitch, [36, 38], seed=5)
    b = render_frames(generator, networks, w_person, prepared, yaw_pitch, [36, 38], seed=5)
    c = render_frames(generator, networks, w_person, prepared, yaw_pitch, [36, 38], seed=5, use_delta=False)
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sync_clip_puts_renders_at_positions_one_and_three():
    real = torch.full((5, 3, 16, 16), -1.0)
    fake = torch.full((2, 3, 16, 16), 1.0)
    clip = sync_clip(real, fake, torch.tensor([[0.0, 0.0, 16.0, 16.0]]).repeat(5, 1))
    assert clip.shape == (1, 15, 48, 96)
    per_frame = clip.reshape(5, 3, 48, 96).mean(dim=(1, 2, 3))
    assert per_frame.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_out_of_memory_turns_on_checkpointing_then_fewer_windows(setup_parts, tmp_path, monkeypatch):
    from r3dp_core.talk3d.personalise import training

    preset = setup_parts[0]
    real_loss = training.unet_step_loss
    failures = {"left": 2}
    seen = []

    def short_of_memory(setup, networks, planes, ws, windows, **kwargs):
        seen.append((len(windows), kwargs["checkpointing"]))
        if failures["left"]:
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_loss(setup, networks, planes, ws, windows, **kwargs)

    monkeypatch.setattr(training, "unet_step_loss", short_of_memory)
    said = []
    state = train_unet(_setup(setup_parts), _networks(preset), tmp_path, 2, state=TrainingState(windows_per_step=2),
                       save_every=1000, say=said.append)
    assert seen[:3] == [(2, False), (2, True), (1, True)] and state.step == 2
    assert state.checkpointing and state.windows_per_step == 1 and len(state.deviations) == 2
    assert "gradient checkpointing" in said[0] and "1 window(s) = 2 frames" in said[1]
    assert load_checkpoint(tmp_path)[0].windows_per_step == 1     # a resumed run keeps the lighter setting
