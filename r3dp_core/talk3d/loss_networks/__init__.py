"""The pretrained networks behind Talk3D's training losses, in plain PyTorch, loading the official weight files.

* :class:`LPIPS` — LPIPS v0.1 with the AlexNet trunk (``lpips.LPIPS(net='alex')``): ``(x, y)`` → ``[B]``;
* :class:`IdentityEncoder` — ArcFace IR-SE50 (pSp/e4e ``Backbone(112, 50, 'ir_se')``): ``x`` → ``[B,512]``;
* :class:`SyncNet` — Wav2Lip's lip-sync expert ``SyncNet_color``: ``(mel, faces)`` → two ``[B,512]`` embeddings;
  with :func:`wav2lip_mel` (Wav2Lip's melspectrogram), :func:`sync_probability` and :func:`sync_loss`.

:func:`load_loss_networks` loads whichever of them have their files in the models folder (slots
``lpips_alexnet`` + ``lpips_alex``, ``arcface_ir_se50``, ``wav2lip_syncnet`` of ``r3dp_core.model_files``); a term
whose file is missing is None and said once, so training runs without it. The networks are frozen and always in
inference mode; gradients flow through them to the images. Images are RGB ``[B,3,H,W]`` in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import model_files
from .arcface import IdentityEncoder
from .lpips import LPIPS
from .syncnet import SyncNet, sync_loss, sync_probability, wav2lip_mel
from .weights import ARCFACE, LOSS_NETWORK_SLOTS, LPIPS_ALEXNET, LPIPS_HEADS, SYNCNET, identify_file, load_slot

__all__ = ["LPIPS", "IdentityEncoder", "SyncNet", "LossNetworks", "load_loss_networks", "load_lpips",
           "load_identity_encoder", "load_syncnet", "wav2lip_mel", "sync_probability", "sync_loss", "identify_file",
           "LOSS_NETWORK_SLOTS", "TERM_SLOTS"]

#: Loss term → the model-file slots it needs.
TERM_SLOTS: dict[str, tuple[str, ...]] = {"lpips": (LPIPS_ALEXNET, LPIPS_HEADS), "identity": (ARCFACE,),
                                          "sync": (SYNCNET,)}
TERM_DESCRIPTIONS = {"lpips": "LPIPS (perceptual)", "identity": "identity (ArcFace)", "sync": "lip-sync (SyncNet)"}
SYNCNET_LICENCE_NOTE = ("The lip-sync term uses Wav2Lip's lipsync_expert.pth, which is licensed for research and "
                        "non-commercial use only.")


@dataclass
class LossNetworks:
    """The loss networks that could be loaded; a None term is left out of training and evaluation."""

    lpips: LPIPS | None = None
    identity: IdentityEncoder | None = None
    sync: SyncNet | None = None

    def terms(self) -> list[str]:
        """Names of the usable terms, in the order ``"lpips"``, ``"identity"``, ``"sync"``."""
        return [term for term in TERM_SLOTS if getattr(self, term) is not None]


def _frozen(network: torch.nn.Module, device) -> torch.nn.Module:
    return network.requires_grad_(False).to(device)


def load_lpips(alexnet_path: str | Path, heads_path: str | Path, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS from torchvision's ``alexnet-owt-7be5be79.pth`` and the LPIPS v0.1 ``alex.pth``.

    Raises:
        ModelFileError: a file unreadable or not the official one (naming it).
    """
    network = LPIPS()
    load_slot(LPIPS_ALEXNET, Path(alexnet_path), network)
    load_slot(LPIPS_HEADS, Path(heads_path), network)
    return _frozen(network, device)


def load_identity_encoder(path: str | Path, device: str | torch.device = "cpu") -> IdentityEncoder:
    """ArcFace IR-SE50 from ``model_ir_se50.pth``. Raises ``ModelFileError`` naming a wrong or unreadable file."""
    network = IdentityEncoder()
    load_slot(ARCFACE, Path(path), network)
    return _frozen(network, device)


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """Wav2Lip's SyncNet from ``lipsync_expert.pth``. Raises ``ModelFileError`` naming a wrong or unreadable file."""
    network = SyncNet()
    load_slot(SYNCNET, Path(path), network)
    return _frozen(network, device)


def load_loss_networks(models_dir: str | Path, device: str | torch.device = "cpu",
                       say: Callable[[str], None] = print) -> LossNetworks:
    """Load every loss network whose files are in ``models_dir``, on ``device`` (CPU, CUDA or MPS).

    Each missing file leaves its term None and is said in one line: the file, where it goes, how to get it, and
    that training goes on without the term. Loading the lip-sync expert also says, once, that its licence is
    research/non-commercial only.

    Raises:
        ModelFileError: a file is present but unreadable or not the official one (naming it); nothing is left out
            silently for a wrong file.
    """
    models_dir = Path(models_dir)
    found: dict[str, Path | None] = {}
    for term, slots in TERM_SLOTS.items():
        for slot in slots:
            spec = model_files.BY_KEY[slot]
            found[slot] = spec.find(models_dir)
            if found[slot] is None:
                say(f"{spec.missing_message(models_dir)} Until it is there, training and evaluation leave out the "
                    f"{TERM_DESCRIPTIONS[term]} term.")
    networks = LossNetworks()
    if found[LPIPS_ALEXNET] is not None and found[LPIPS_HEADS] is not None:
        networks.lpips = load_lpips(found[LPIPS_ALEXNET], found[LPIPS_HEADS], device)
    if found[ARCFACE] is not None:
        networks.identity = load_identity_encoder(found[ARCFACE], device)
    if found[SYNCNET] is not None:
        networks.sync = load_syncnet(found[SYNCNET], device)
        say(SYNCNET_LICENCE_NOTE)
    return networks
