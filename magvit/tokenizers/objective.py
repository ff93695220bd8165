"""The VQGAN training objective of the tokenizers (MAGVIT paper Sec. 3.1; the authors' ``train_g_d`` in
``videogvt/trainers/vqgan_trainer.py``).

:class:`VQGANObjective` holds the tokenizer (generator), the discriminator, the loss terms and an EMA
copy of the generator, and exposes the two steps the shared trainer alternates::

    loss, recon, logs = objective.generator_loss(video, step)        # backward, optimiser_g.step()
    loss, logs = objective.discriminator_loss(video, recon, step)    # backward, optimiser_d.step()

Both accept the modules to call (``tokenizer=``, ``discriminator=``), so the trainer can pass its DDP
wrappers. Optimisers, schedules and the generator EMA belong to the shared trainer
(:mod:`magvit.train`, :class:`magvit.train.tokenizer_stage.TokenizerStage`).

Generator loss::

    L2 + 0.1 * perceptual + 0.1 * softplus(-D(recon)) + quantizer_loss

Discriminator loss::

    softplus(-D(real)) + softplus(D(fake)) + 10 * R1 + lecam_weight * LeCam

The GAN terms switch on at ``discriminator_start_step`` (0 in the released configs).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

from typing import Any

import attrs
import torch
from torch import Tensor, nn

from magvit.tokenizers.discriminator import StyleGANDiscriminator
from magvit.tokenizers.losses import (
    LeCam,
    PerceptualLoss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    l2_loss,
    r1_penalty,
)
from magvit.tokenizers.tokenizer import VQTokenizer

@attrs.frozen
class GeneratorLogs:
    """Scalars of one generator step."""

    loss: float
    l2: float
    perceptual: float
    adversarial: float
    quantizer: float
    commitment: float
    codebook: float
    entropy: float
    perplexity: float
    usage: float


class VQGANObjective(nn.Module):
    """Generator and discriminator losses of a VQ tokenizer, plus the EMA generator.

    Args:
        tokenizer: the generator (:class:`~magvit.tokenizers.vq3d.VQ3D` or ``VQ2D``).
        discriminator: a :class:`~magvit.tokenizers.discriminator.StyleGANDiscriminator`.
        perceptual_weights: local state-dict file of the timm classifier; ``None`` turns the perceptual
            loss off (warned once, here).
        perceptual_arch: timm architecture of the perceptual loss (``"resnet50"``, the authors').
        l2_weight, perceptual_weight, adversarial_weight: generator weights (1, 0.1, 0.1; the authors' configs).
        r1_cost: R1 penalty cost (10, every step; the authors' configs).
        lecam_weight: LeCam weight. Default 0.0, as in the released configs (``lecam_weight`` unset);
            the paper uses LeCam but gives no weight; the LeCam paper's suggested 0.001 is a good start.
        lecam_decay: EMA decay of the LeCam anchors (0.999).
        discriminator_start_step: first step with GAN terms (0 in the released configs).
    """

    def __init__(
        self,
        tokenizer: VQTokenizer,
        discriminator: StyleGANDiscriminator,
        *,
        perceptual_weights: str | os.PathLike[str] | None = None,
        perceptual_arch: str = "resnet50",
        l2_weight: float = 1.0,
        perceptual_weight: float = 0.1,
        adversarial_weight: float = 0.1,
        r1_cost: float = 10.0,
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.999,
        discriminator_start_step: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.discriminator = discriminator
        self.l2_weight = l2_weight
        self.perceptual_weight = perceptual_weight
        self.adversarial_weight = adversarial_weight
        self.r1_cost = r1_cost
        self.lecam_weight = lecam_weight
        self.discriminator_start_step = discriminator_start_step
        self.lecam = LeCam(lecam_decay)
        if perceptual_weights is None or perceptual_weight == 0:
            self.perceptual: PerceptualLoss | None = None
            if perceptual_weight != 0:
                warnings.warn(
                    "VQGANObjective: no perceptual_weights file given, so the perceptual loss is off "
                    f"(the authors' configs use {perceptual_weight} x ResNet-50 logit L2)",
                    stacklevel=2,
                )
        else:
            self.perceptual = PerceptualLoss(perceptual_weights, perceptual_arch)

    def gan_active(self, step: int) -> bool:
        """Whether the GAN terms are on at ``step``."""
        return step >= self.discriminator_start_step

    # -- the two steps ------------------------------------------------------------------------
    def generator_loss(
        self, video: Tensor, step: int = 0, *, tokenizer: Callable[[Tensor], Any] | None = None,
        judged: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One generator step's loss; returns ``(loss, recon, logs)``.

        ``tokenizer`` is what to call for the forward pass (e.g. its DDP wrapper); default ``self.tokenizer``.
        ``judged`` maps a batch of clips to what the discriminator sees of them (e.g. ``k`` sampled frames per
        clip for the per-frame discriminator of the 2D-VQ); default the whole clips.

        ``recon`` keeps its graph; pass ``recon.detach()`` (or ``recon``) to :meth:`discriminator_loss`.
        The discriminator's parameters collect no gradient here.
        """
        out = (tokenizer or self.tokenizer)(video)
        recon = out.recon
        l2 = l2_loss(video, recon)
        loss = self.l2_weight * l2 + out.quantizer.loss
        perceptual = torch.zeros(())
        if self.perceptual is not None:
            perceptual = self.perceptual(video, recon)
            loss = loss + self.perceptual_weight * perceptual
        adversarial = torch.zeros(())
        if self.gan_active(step) and self.adversarial_weight > 0:
            self.discriminator.requires_grad_(False)
            try:
                adversarial = generator_adversarial_loss(self.discriminator(recon if judged is None else judged(recon)))
            finally:
                self.discriminator.requires_grad_(True)
            loss = loss + self.adversarial_weight * adversarial
        q = out.quantizer
        logs = GeneratorLogs(
            loss=loss.item(),
            l2=l2.item(),
            perceptual=perceptual.item(),
            adversarial=adversarial.item(),
            quantizer=q.loss.item(),
            commitment=q.commitment_loss.item(),
            codebook=q.codebook_loss.item(),
            entropy=q.entropy_loss.item(),
            perplexity=q.perplexity.item(),
            usage=q.usage.item(),
        )
        return loss, recon, {f"g/{k}": v for k, v in attrs.asdict(logs).items()}

    def discriminator_loss(
        self, video: Tensor, recon: Tensor, step: int = 0, *, discriminator: Callable[[Tensor], Tensor] | None = None,
        judged: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """One discriminator step's loss; returns ``(loss, logs)``.

        Real and fake clips go through ``discriminator`` (default ``self.discriminator``; the trainer passes
        its DDP wrapper) in one forward pass, so a distributed run reduces one graph. ``judged`` is applied to
        the real and fake clips together before they reach it (as in :meth:`generator_loss`).

        A per-frame discriminator (``spatial_dims == 2``) gives one logit per frame: every loss term is then a
        mean over frames, the R1 penalty included (each frame is an image, as the authors' 2D-VQ trains on).

        Before ``discriminator_start_step`` it returns a zero loss with no graph to the discriminator
        (``gan_active(step)`` tells the trainer to skip the step).
        """
        if not self.gan_active(step):
            return torch.zeros((), requires_grad=True), {"d/loss": 0.0}
        disc = discriminator or self.discriminator
        logits: list[Tensor] = []

        def real_and_fake(real: Tensor) -> Tensor:
            clips = torch.cat([real, recon.detach()])
            both = disc(clips if judged is None else judged(clips))
            half = both.shape[0] // 2  # one logit per clip, or per judged frame (real ones first)
            logits.append(both[half:])
            return both[:half]

        r1, real_logits = r1_penalty(real_and_fake, video, self.r1_cost)
        # r1_penalty sums the squared gradient over each clip; with one logit per judged frame the sum covers
        # that many images, and the penalty of the authors' 2D-VQ is a mean over images.
        r1 = r1 / (real_logits.shape[0] // video.shape[0])
        fake_logits = logits[0]
        adversarial = discriminator_adversarial_loss(real_logits, fake_logits)
        loss = adversarial + r1
        logs = {"d/adversarial": adversarial.item(), "d/r1": r1.item()}
        if self.lecam_weight > 0:
            lecam = self.lecam(real_logits, fake_logits)
            loss = loss + self.lecam_weight * lecam
            logs["d/lecam"] = lecam.item()
        self.lecam.update(real_logits, fake_logits)
        logs.update(
            {
                "d/loss": loss.item(),
                "d/real_logit": real_logits.mean().item(),
                "d/fake_logit": fake_logits.mean().item(),
            }
        )
        return loss, logs
