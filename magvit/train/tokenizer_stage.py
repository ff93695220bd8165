"""Stage one: the VQGAN training of a tokenizer (paper Sec. 3.1; the authors' ``videogvt/trainers/vqgan_trainer.py``).

Two phases per step, generator then discriminator, each with Adam lr 1e-4, betas (0, 0.99), no weight
decay, warm-up then cosine; the trainer keeps an EMA (0.999) of the generator, which is the copy used for
tokenising (:func:`magvit.pipeline.load_tokenizer`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from magvit import registry
from magvit.batch import ClipBatch
from magvit.config import part_spec
from magvit.errors import InputError
from magvit.tokenizers.discriminator import build_discriminator
from magvit.tokenizers.frame_sampling import sample_frames
from magvit.tokenizers.objective import VQGANObjective
from magvit.train.init_from import InitFrom, InitRecord, inflate_from_checkpoint
from magvit.train.optim import OptimConfig
from magvit.train.settings import in_unit_interval, with_activation_checkpointing
from magvit.train.stage import PhaseSpec, Stage, StepContext, check_clip_shape

#: The authors' optax.adamw(lr 1e-4, b1 0, b2 0.99), weight decay unset, no gradient clipping
#: (videogvt/configs/vqgan2d_ucf101_config.py, which the 3D-VQ configs extend).
TOKENIZER_OPTIM = OptimConfig(lr=1e-4, betas=(0.0, 0.99), weight_decay=0.0, warmup_steps=0, grad_clip=0.0)


class TokenizerStage(Stage):
    """Train a registered tokenizer (``vq3d``, ``vq2d`` or a plugin's) with the VQGAN objective.

    Args:
        tokenizer: registry name of the tokenizer.
        preset: size preset (``tiny``, ``B``, ``L``).
        resolution: clip height and width (64 or 128 for B/L; tiny takes 32 or 64).
        frames: frames per clip of the training data.
        tokenizer_options: overrides of the tokenizer preset (e.g. ``{"padding": "zeros"}``).
        discriminator_options: overrides of the discriminator (e.g. ``{"filters": 32}``), and which one:
            ``spatial_dims`` 3 (the 3D-VQ's video discriminator, default; it judges the generator's whole input)
            or 2 (per frame, the 2D-VQ baseline of paper Table 7), and for a per-frame one ``frames``: how
            many frames of each clip it judges, sampled per clip and step (default: all of them).
        frames_per_clip: train a per-frame tokenizer (``vq2d``) on this many frames sampled from each clip
            per step, images from the video shards (the authors' 2D-VQ: 4); None trains on whole clips.
        init_from: start a 3D tokenizer from a trained 2D-VQ's tokenizer-stage checkpoint by ``central`` or
            ``average`` inflation (:mod:`magvit.train.init_from`); what it leaves unmapped is printed and kept
            in the checkpoint (``extra.init_from``).
        perceptual_weights: local ResNet-50 state-dict file; None turns the perceptual loss off (warned once).
        l2_weight, perceptual_weight, adversarial_weight: generator loss weights (1, 0.1, 0.1 as released).
        r1_cost: R1 penalty cost (10 as released).
        lecam_weight: LeCam weight; 0 as in the released configs (the paper uses LeCam without a weight;
            0.001 is the LeCam paper's suggestion).
        discriminator_start_step: first step with GAN terms (0 in the released configs).
        optim: optimiser settings for both networks.
        ema_decay: decay of the generator EMA (0.999).
        activation_checkpointing: recompute each encoder and decoder level's activations in the backward
            pass instead of keeping them (less memory, about one more generator forward pass per step, the
            same losses and gradients); sets ``tokenizer_options.activation_checkpointing``
            (:class:`~magvit.tokenizers.tokenizer.VQTokenizer`), which is recorded in the checkpoint's config.
    """

    name = "tokenizer"

    def __init__(
        self,
        tokenizer: str = "vq3d",
        preset: str = "tiny",
        resolution: int = 64,
        frames: int = 16,
        tokenizer_options: dict[str, Any] | None = None,
        discriminator_options: dict[str, Any] | None = None,
        perceptual_weights: str | None = None,
        l2_weight: float = 1.0,
        perceptual_weight: float = 0.1,
        adversarial_weight: float = 0.1,
        r1_cost: float = 10.0,
        lecam_weight: float = 0.0,
        discriminator_start_step: int = 0,
        optim: OptimConfig = TOKENIZER_OPTIM,
        ema_decay: float = 0.999,
        frames_per_clip: int | None = None,
        init_from: InitFrom | None = None,
        activation_checkpointing: bool = False,
    ) -> None:
        in_unit_interval(TokenizerStage, "ema_decay", ema_decay)
        tokenizer_options = with_activation_checkpointing(TokenizerStage, "tokenizer_options", tokenizer_options,
                                                          activation_checkpointing)
        self.tokenizer_name = tokenizer
        self.frames, self.resolution = frames, resolution
        self.tokenizer = registry.get_tokenizer(tokenizer, preset=preset, resolution=resolution, **(tokenizer_options or {}))
        self.frames_per_clip = _check_frames_per_clip(frames_per_clip, frames, self.tokenizer, tokenizer)
        options = dict(discriminator_options or {})
        spatial_dims = options.pop("spatial_dims", 3)
        seen = frames_per_clip or frames  # the frames of a clip the generator reconstructs
        self.judged_frames = _judged_frames(spatial_dims, options.pop("frames", None), seen)
        self.discriminator = build_discriminator(
            preset, resolution, self.judged_frames, spatial_dims=spatial_dims, **options
        )
        self.init_record: InitRecord | None = None
        if init_from is not None:
            self.init_record = inflate_from_checkpoint(init_from, self.tokenizer, self.discriminator)
            print(f"note: {self.init_record.message()}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.objective = VQGANObjective(
                self.tokenizer, self.discriminator, perceptual_weights=perceptual_weights,
                l2_weight=l2_weight, perceptual_weight=perceptual_weight, adversarial_weight=adversarial_weight,
                r1_cost=r1_cost, lecam_weight=lecam_weight, discriminator_start_step=discriminator_start_step,
            )
        for w in caught:  # said once, at start-up (not per step)
            print(f"note: {w.message}")
        self.optim, self.ema_decay = optim, ema_decay
        # per micro-batch: the generator's input and its reconstruction, which the discriminator phase judges
        self._recon: dict[int, tuple[Tensor, Tensor]] = {}

    def check_data(self, clip_shape: tuple[int, int, int], num_classes: int, source: str) -> None:
        check_clip_shape(clip_shape, self.frames, self.resolution, source)

    def to(self, device: torch.device) -> TokenizerStage:
        self.objective.to(device)
        return self

    def phases(self) -> list[PhaseSpec]:
        return [
            PhaseSpec("generator", self.tokenizer, self.optim, self.ema_decay),
            # The R1 penalty differentiates the discriminator twice (a gradient of a gradient).
            PhaseSpec("discriminator", self.discriminator, self.optim, shardable=False),
        ]

    def loss(self, phase: str, model: Any, batch: ClipBatch, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if batch.video is None:
            raise InputError("the tokenizer stage trains on video, but the batch holds tokens only; give it clip "
                             "shards (data.train)")
        judged = self._judged(ctx.generator)
        if phase == "generator":
            video = batch.video.to(next(self.tokenizer.parameters()).device)
            if self.frames_per_clip is not None:
                video = sample_frames(video, self.frames_per_clip, ctx.generator)
            loss, recon, logs = self.objective.generator_loss(video, ctx.step, tokenizer=model, judged=judged)
            self._recon[ctx.micro_batch] = (video, recon.detach())  # the discriminator phase of this step reuses them
            return loss, logs
        anchors = {k: v.clone() for k, v in self.objective.lecam.state_dict().items()}
        video, recon = self._recon.pop(ctx.micro_batch)
        loss, logs = self.objective.discriminator_loss(video, recon, ctx.step, discriminator=model, judged=judged)
        if not all(bool(torch.isfinite(v).all()) for v in self.objective.lecam.state_dict().values()):
            # The trainer skips a step with non-finite logits; the LeCam anchors it moved must not keep them.
            self.objective.lecam.load_state_dict(anchors)
        return loss, logs

    def model_config(self) -> dict[str, Any]:
        return {"tokenizer": part_spec(self.tokenizer, self.tokenizer_name)}

    def _judged(self, generator: torch.Generator) -> Callable[[Tensor], Tensor] | None:
        """What the discriminator sees of a clip: ``judged_frames`` frames sampled per clip (drawn from the
        step generator, so a resumed run draws the same), or the whole clip."""
        k = self.judged_frames
        if k == (self.frames_per_clip or self.frames):
            return None
        return lambda video: sample_frames(video, k, generator)

    def extra_state(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"lecam": self.objective.lecam.state_dict()}
        if self.init_record is not None:
            extra["init_from"] = self.init_record.to_plain()
        return extra

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.objective.lecam.load_state_dict(state["lecam"])

    def samples(self, batch: ClipBatch, generator: torch.Generator) -> dict[str, list[Tensor]]:
        """input | reconstruction of two clips."""
        was_training = self.tokenizer.training
        self.tokenizer.eval()
        try:
            video = batch.video[:2].to(next(self.tokenizer.parameters()).device)
            return {"reconstruction": [video, self.tokenizer.decode(self.tokenizer.encode(video))]}
        finally:
            self.tokenizer.train(was_training)


def _check_frames_per_clip(frames_per_clip: int | None, frames: int, tokenizer: Any, name: str) -> int | None:
    """Sampled frames train only a per-frame tokenizer: a 3D one needs the clip's consecutive frames."""
    if frames_per_clip is None:
        return None
    if isinstance(frames_per_clip, bool) or not isinstance(frames_per_clip, int) or not 1 <= frames_per_clip <= frames:
        raise InputError(f"model.init_args.frames_per_clip must be an integer in [1, frames = {frames}] or null, "
                         f"got {frames_per_clip!r}")
    if getattr(tokenizer, "spatial_dims", None) != 2:
        raise InputError(f"model.init_args.frames_per_clip samples frames for a per-frame tokenizer (vq2d), but the "
                         f"tokenizer {name!r} is not per-frame; drop frames_per_clip to train it on whole clips")
    return frames_per_clip


def _judged_frames(spatial_dims: Any, frames: Any, seen: int) -> int:
    """How many frames per clip the discriminator judges (:class:`TokenizerStage`, ``discriminator_options``)."""
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise InputError("model.init_args.discriminator_options.spatial_dims must be 3 (video discriminator) or 2 "
                         f"(per-frame discriminator), got {spatial_dims!r}")
    if frames is None:
        return seen
    if spatial_dims == 3 and frames != seen:
        raise InputError(f"model.init_args.discriminator_options.frames is {frames!r}, but a 3D discriminator judges "
                         f"the whole {seen}-frame input of the generator; drop it, or set spatial_dims: 2 to judge "
                         "sampled frames")
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= seen:
        raise InputError(f"model.init_args.discriminator_options.frames must be an integer in [1, {seen}] (the "
                         f"frames per clip the generator reconstructs), got {frames!r}")
    return frames
