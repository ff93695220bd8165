"""Loss terms of the 3D-VQ's VQGAN training (MAGVIT paper Sec. 3.1; the authors' ``videogvt/train_lib/losses.py``).

* pixel L2 (weight 1);
* the non-saturating GAN losses: generator ``softplus(-D(fake))``, discriminator
  ``softplus(-D(real)) + softplus(D(fake))``, each a batch mean;
* the R1 gradient penalty ``cost * mean_b sum (d sum D / d x)^2`` on real clips, cost 10, every step;
* LeCam regularisation (Tseng et al., CVPR 2021) with EMAs of the mean logits (decay 0.999);
* the perceptual loss: L2 between the 1000-d ImageNet ResNet-50 logits of real and reconstructed
  frames (T folded into the batch, bilinear resize to 224, [0, 1] input without normalisation).

Every term is computed in float32 from its inputs (``.float()``), whatever dtype autocast gave the
reconstruction or the logits (:mod:`magvit.precision`): bfloat16 keeps 8 significant bits, so a pixel error
below 2^-9 next to a value near 1 would round away, and the means and the R1 penalty sum over every pixel or
logit of a batch, where low-precision accumulation drifts.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import InputError, MagvitError
from magvit.safe_load import load_safetensors, load_torch_data, state_dict_mismatch
from magvit.tokenizers.tokenizer import fold_time

#: Frame size the ResNet-50 of the perceptual loss sees (as the authors' perceptual loss).
PERCEPTUAL_SIZE = 224


def l2_loss(video: Tensor, recon: Tensor) -> Tensor:
    """Mean squared error on [0, 1] pixels (float32: module docstring)."""
    return (video.float() - recon.float()).pow(2).mean()


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``mean softplus(-D(G(x)))`` (float32: module docstring)."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_adversarial_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating discriminator loss ``mean softplus(-D(x)) + mean softplus(D(G(x)))`` (float32: module
    docstring)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def r1_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, cost: float = 10.0) -> tuple[Tensor, Tensor]:
    """R1 penalty ``cost * mean_b sum (d sum_b D(x) / d x)^2`` on real clips (``gradient_penalty='r1'``).

    Returns ``(penalty, real_logits)`` so the caller reuses the logits of the same forward pass.
    The penalty keeps its graph (``create_graph=True``) so it trains the discriminator.
    """
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    # the logits summed in float32 (module docstring); the gradient w.r.t. the float32 clips is float32
    (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return cost * grad.float().pow(2).flatten(1).sum(1).mean(), logits


class LeCam(nn.Module):
    """LeCam regulariser with EMA anchors (the authors' ``lecam_reg``).

    ``mean(relu(mean D(real) - ema_fake)^2) + mean(relu(ema_real - mean D(fake))^2)``, where the anchors
    ``ema_real`` / ``ema_fake`` are EMAs (decay 0.999) of the batch-mean logits. The anchors start at 0
    and are buffers, so they are saved with the objective's state dict.
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise InputError(f"LeCam decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @torch.no_grad()
    def update(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        """Move the anchors towards this batch's mean logits."""
        self.ema_real.lerp_(real_logits.detach().float().mean(), 1 - self.decay)
        self.ema_fake.lerp_(fake_logits.detach().float().mean(), 1 - self.decay)

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """The penalty against the current anchors (call :meth:`update` afterwards)."""
        real_term = F.relu(real_logits.float().mean() - self.ema_fake).pow(2).mean()  # float32: module docstring
        fake_term = F.relu(self.ema_real - fake_logits.float().mean()).pow(2).mean()
        return real_term + fake_term


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A state dict from a local ``.safetensors`` file or a ``torch.save`` file (loaded as data only)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MagvitError(f"weights file not found: {path!r} (give a local .safetensors or .pt state dict)")
    if path.endswith(".safetensors"):
        return load_safetensors(path, "perceptual-loss weights")
    state = load_torch_data(path, "perceptual-loss weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MagvitError(f"{path!r} does not hold a state dict (got {type(state).__name__})")
    return state


class PerceptualLoss(nn.Module):
    """L2 between ImageNet-classifier logits of real and reconstructed frames (``perceptual_loss_on_logit``).

    Args:
        weights_path: a local state-dict file of the timm model (never downloaded).
        arch: timm architecture; ``"resnet50"`` is the authors'. A smaller one (``"resnet10t"``) is
            handy for tests.

    The network is frozen and kept in eval mode; gradients flow to the reconstruction only.
    """

    def __init__(self, weights_path: str | os.PathLike[str], arch: str = "resnet50") -> None:
        super().__init__()
        import timm  # imported here: only training with a perceptual loss needs timm

        self.net = timm.create_model(arch, pretrained=False)
        state = load_state_dict_file(weights_path)
        problem = state_dict_mismatch(self.net.state_dict(), state)
        if problem:
            raise MagvitError(f"perceptual-loss weights file {os.fspath(weights_path)!r} does not match timm {arch!r}: "
                              f"{problem}; give a state dict of that architecture")
        self.net.load_state_dict(state)
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()  # BatchNorm statistics of the classifier must never change
        return self

    def logits(self, video: Tensor) -> Tensor:
        """Per-frame logits ``[B*T, classes]`` of ``video`` ``[B, 3, T, H, W]``."""
        frames = fold_time(video)
        frames = F.interpolate(frames, size=(PERCEPTUAL_SIZE, PERCEPTUAL_SIZE), mode="bilinear", align_corners=False)
        return self.net(frames)

    def forward(self, video: Tensor, recon: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.logits(video)
        # the classifier runs under the caller's autocast; the L2 between its logits in float32 (module docstring)
        return (self.logits(recon).float() - target.float()).pow(2).mean()
