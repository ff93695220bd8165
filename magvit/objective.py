"""The multi-task masked token modelling objective of MAGVIT (paper Sec. 3.2, Eq. 2-3).

Follows the authors' trainer (``videogvt/trainers/maskgvt_trainer.py`` and ``videogvt/train_lib/maskgvt_train_lib.py``):

* tasks follow a fixed shuffled cycle (:class:`TaskCycle`), one task per step for the whole batch;
* one mask ratio ``gamma(u)``, ``u ~ U[0, 1)``, per step (optionally one per example);
* the real video and the task's padded condition video are tokenised together by the frozen tokenizer;
  condition tokens come from :func:`magvit.masking.task_token_mask`;
* the masking method is a sampler's training side (:mod:`magvit.samplers`): COMMIT (default) or one of the
  paper Table 5 baselines;
* the loss is cross-entropy over codebook logits with label smoothing 1e-4, weighted per token, averaged
  per example as ``sum(w CE) / (sum(w) + 1e-8)`` and then over the batch.

A training batch (:class:`~magvit.batch.ClipBatch`) holds video, tokens or both: the objective uses the
tokens it carries for the step's task (pre-tokenised shards: ground-truth tokens plus per-task condition
tokens and masks) and tokenises only what is missing (:meth:`MultiTaskObjective.tokens_for`).
:func:`token_loss` is the token-level part and needs no tokenizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from magvit.batch import ClipBatch, TokenBatch
from magvit.config import build_part
from magvit.errors import InputError
from magvit.masking import (
    MIN_RATIO,
    TOKEN_RULES,
    LossWeights,
    MaskedTokens,
    sample_ratio,
    task_token_mask,
)
from magvit.precision import autocast_off
from magvit.protocols import MaskScheduler, Sampler, Task, Tokenizer
from magvit.registry import default_registry, sampler_names

__all__ = [
    "LossOutput",
    "MultiTaskObjective",
    "ObjectiveConfig",
    "TaskCycle",
    "WeightOverrides",
    "smoothed_cross_entropy",
    "token_loss",
    "weighted_loss",
]

# The denominator guard of the per-example weighted mean (train_step in videogvt/trainers/maskgvt_trainer.py).
WEIGHT_EPS = 1e-8


def _one_of(choices: Sequence[str]) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise InputError(f"{attribute.name} must be one of {list(choices)}, got {value!r}")

    return check


def _registered_sampler(instance: object, attribute: attrs.Attribute, value: str) -> None:
    try:
        default_registry().entry("sampler", value)  # a name or an alias ("latent")
    except KeyError:
        raise InputError(f"{attribute.name} must be a registered sampler, one of {sampler_names()}, got "
                         f"{value!r}") from None


@attrs.frozen
class WeightOverrides:
    """Loss weights a config sets; each one left None is the method's (``Sampler.default_weights``), so
    ``objective.weights.refine 0`` changes only ``refine``."""

    refine: float | None = None
    mask: float | None = None
    recons: float | None = None

    def over(self, defaults: LossWeights) -> LossWeights:
        """``defaults`` with the weights set here replaced."""
        return LossWeights(*(d if o is None else float(o) for o, d in zip(attrs.astuple(self), attrs.astuple(defaults))))


def _overrides(value: WeightOverrides | LossWeights | Mapping[str, float] | None) -> WeightOverrides:
    if value is None:
        return WeightOverrides()
    if isinstance(value, LossWeights):  # every weight given
        return WeightOverrides(**attrs.asdict(value))
    if isinstance(value, Mapping):
        return WeightOverrides(**value)
    return value


def _scheduler(schedule: str | Mapping[str, Any]) -> MaskScheduler:
    """The mask schedule of :attr:`ObjectiveConfig.schedule` (a name or a spec), through the registry."""
    return build_part("mask scheduler", schedule)


def _buildable_schedule(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    """Build the schedule once, so that a bad name or option is refused with the config, not at step one."""
    _scheduler(value)


def _probability(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise InputError(f"{attribute.name} must be in [0, 1), got {value}")


@attrs.frozen
class ObjectiveConfig:
    """Settings of the objective; defaults are the authors' (``videogvt/configs/maskgvt_*_config.py``).

    Attributes:
        method: the registered sampler whose training side masks the sequence: ``"commit"`` (paper Eq. 2),
            ``"maskgit"`` (MaskGIT latent masking; the paper's name ``"latent"`` is its alias) or
            ``"prefix"`` (prefix condition), the baselines of paper Table 5, ``"ar"`` (the autoregressive
            baseline of Table 6), or a plugin's sampler. It also picks the architecture (causal for ``ar``,
            prefix condition for ``prefix``) and the sampler the model decodes with.
        sampler_options: the sampler's options (e.g. ``{"unmaskable": "ground_truth"}`` for ``maskgit``).
        schedule: the mask-ratio schedule: a registry name (``"cosine"``) or a spec ``{"name": ...,
            "config": {...}}`` setting its constructor arguments (e.g. ``{"name": "exp", "config":
            {"num_tokens": 256}}``).
        token_rule: ``"supervoxel"`` (paper) or ``"analytic"`` (authors' code, ``videogvt/train_lib/cond_utils.py``).
        label_smoothing: epsilon of the smoothed targets (1e-4).
        weights: overrides of the refine / mask / recons loss weights; each one not set is the method's
            default (``Sampler.default_weights``: all 1 for COMMIT; see each sampler).
        ratio_per_example: one mask ratio per example instead of one per step.
        condition_dropout: probability of dropping an example's class and visual condition (classifier-free
            guidance training; 0 in the paper).
    """

    method: str = attrs.field(default="commit", validator=_registered_sampler)
    sampler_options: dict[str, Any] = attrs.field(factory=dict)
    schedule: str | dict[str, Any] = attrs.field(default="cosine", validator=_buildable_schedule)
    token_rule: str = attrs.field(default="supervoxel", validator=_one_of(TOKEN_RULES))
    label_smoothing: float = attrs.field(default=1e-4, validator=_probability)
    weights: WeightOverrides = attrs.field(factory=WeightOverrides, converter=_overrides)
    ratio_per_example: bool = False
    condition_dropout: float = attrs.field(default=0.0, validator=_probability)

    def __attrs_post_init__(self) -> None:
        sampler = self.sampler()  # a bad option is refused with the config
        if self.condition_dropout and not sampler.supports_guidance:
            raise InputError(f"condition_dropout trains for classifier-free guidance, which the {sampler.name!r} "
                             f"sampler (method={self.method!r}) does not support; set condition_dropout 0")

    def sampler(self) -> Sampler:
        """The sampler of :attr:`method` with :attr:`sampler_options`."""
        return build_part("sampler", {"name": self.method, "config": dict(self.sampler_options)})

    def loss_weights(self, sampler: Sampler) -> LossWeights:
        """The loss weights of a step: :attr:`weights` over ``sampler.default_weights``."""
        return self.weights.over(sampler.default_weights)


class TaskCycle:
    """The fixed shuffled task sequence of the authors' trainer (``get_task_idx_sequence`` in
    ``videogvt/train_lib/maskgvt_train_lib.py``).

    Task ``i`` appears ``round(w_i * 100 / min(1, min_w))`` times; the list is shuffled once with ``seed``;
    step ``s`` uses ``sequence[s % len(sequence)]``.
    """

    def __init__(self, weights: Sequence[float], seed: int = 0) -> None:
        if not weights or any(w <= 0 for w in weights):
            raise InputError(f"task weights must be a non-empty list of positive numbers, got {list(weights)}")
        scale = 100 / min(1.0, min(weights))
        counts = [round(w * scale) for w in weights]
        order = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)])
        perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed))
        self.sequence: tuple[int, ...] = tuple(order[perm].tolist())

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, step: int) -> int:
        return self.sequence[step % len(self.sequence)]


@attrs.frozen
class LossOutput:
    """Result of one objective evaluation.

    Attributes:
        loss: scalar, batch mean of the per-example weighted CE.
        per_example: float ``[B]``.
        accuracy: scalar, argmax accuracy on the masked positions (a detached metric).
        masked: the :class:`~magvit.masking.MaskedTokens` fed to the model.
        task: name of the task.
    """

    loss: Tensor
    per_example: Tensor
    accuracy: Tensor
    masked: MaskedTokens
    task: str


# -- loss -----------------------------------------------------------------------------------------------


def smoothed_cross_entropy(logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
    """Per-token CE ``[B, N]`` against targets smoothed to on ``1-e+e/K``, off ``e/K`` (the authors' ``losses.py``).

    With ``q = (1-e) onehot + e/K``: ``CE = (1-e) (-log p_target) + e mean_k(-log p_k)``.
    """
    # float32 logits: the model may run under autocast (magvit.precision), and a bfloat16 log-softmax over K
    # codes keeps 8 bits of each log-probability
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
    if smoothing == 0.0:
        return nll
    return (1.0 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)


def weighted_loss(ce: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """``sum(w CE) / (sum(w) + 1e-8)`` per example, then the batch mean (the authors' ``train_step``)."""
    per_example = (weights * ce).sum(dim=1) / (weights.sum(dim=1) + WEIGHT_EPS)
    return per_example.mean(), per_example


# -- token level ----------------------------------------------------------------------------------------


def _flat(name: str, value: Tensor, batch: int, n: int, dtype: torch.dtype) -> Tensor:
    if value.dtype != dtype or value.dim() < 2 or value.shape[0] != batch or value[0].numel() != n:
        raise InputError(f"{name} must be {dtype} [B, N] or [B, t, h, w] with B={batch}, N={n}; got "
                         f"{value.dtype} {tuple(value.shape)}")
    return value.reshape(batch, n)


def _mask(maskable: Tensor, config: ObjectiveConfig, scheduler: MaskScheduler,
          generator: torch.Generator | None) -> Tensor:
    """Positions to mask among the ``maskable`` ones (bool ``[B, N]``): ``clip(floor(M gamma), 1, M)`` of the
    ``M`` maskable positions of each example at uniformly random places (``random_mask`` in the authors'
    ``videogvt/train_lib/mask_utils.py``), with one ratio per step (the authors' ``generate_mask_ratio``) or,
    as an option, one per example."""
    b, n = maskable.shape
    if config.ratio_per_example:
        u = torch.rand(b, generator=generator, dtype=torch.float64)
        gamma = torch.stack([scheduler.ratio(x).clamp(MIN_RATIO, 1.0) for x in u]) if b else torch.zeros(0)
    else:
        gamma = torch.full((b,), sample_ratio(scheduler, generator), dtype=torch.float64)
    num_maskable = maskable.sum(dim=1)
    counts = torch.floor(num_maskable.cpu().double() * gamma).long().clamp(min=1)
    counts = torch.minimum(counts, num_maskable.cpu()).to(maskable.device)
    scores = torch.rand((b, n), generator=generator, device=maskable.device)
    # Unmaskable positions score +inf (the authors' NEVER_MASK), so they sort last and are never cut.
    scores = torch.where(maskable, scores, torch.full_like(scores, torch.inf))
    cutoff = scores.sort(dim=1).values.gather(1, (counts - 1).clamp(min=0)[:, None])
    return (scores <= cutoff) & maskable & (counts > 0)[:, None]


def _class_ids(model: Any, task: Task, labels: Tensor | None, batch: int, device: Any) -> Tensor:
    if not task.uses_class:
        return model.vocab.class_ids(None, batch, device)
    if labels is None:
        raise InputError(f"task {task.name!r} is class-conditional: labels [B] are required")
    return model.vocab.class_ids(labels, batch, device)


def _prompt_ids(model: Any, task: Task, batch: int, device: Any) -> Tensor | None:
    if not model.vocab.prompts:
        return None
    return torch.full((batch,), model.vocab.prompt_id(task.prompt), dtype=torch.long, device=device)


def token_loss(
    model: Any,
    tokens: Tensor,
    cond_tokens: Tensor | None,
    cond_mask: Tensor | None,
    labels: Tensor | None,
    task: Task,
    generator: torch.Generator | None,
    config: ObjectiveConfig = ObjectiveConfig(),
    scheduler: MaskScheduler | None = None,
) -> LossOutput:
    """Masked token modelling loss of one batch of one task (paper Eq. 3).

    Args:
        model: a :class:`~magvit.transformer.MaskedTransformer` of the architecture ``config.method`` needs
            (causal for ``ar``, prefix condition for ``prefix``).
        tokens: ground-truth codes, long ``[B, N]`` or ``[B, t, h, w]``.
        cond_tokens: condition codes ``z~`` (same shape), None for tasks without a visual condition.
        cond_mask: bool, True on condition tokens; None means no condition token.
        labels: class labels long ``[B]`` (required by class-conditional tasks), or None.
        task: the task (its prompt and ``uses_class`` are used).
        generator: source of the mask ratio, mask positions and condition dropout.
    """
    if not isinstance(tokens, Tensor) or tokens.dim() < 2:
        raise InputError(f"tokens must be a long tensor [B, N] or [B, t, h, w], got {getattr(tokens, 'shape', tokens)}")
    b, n = tokens.shape[0], model.num_tokens
    device = tokens.device
    tokens = _flat("tokens", tokens, b, n, torch.long)
    if not task.needs_video or cond_tokens is None:
        if cond_mask is not None and bool(cond_mask.any()):
            raise InputError(f"task {task.name!r}: cond_mask marks condition tokens but cond_tokens is None")
        cond_tokens = torch.zeros_like(tokens)
        cond_mask = torch.zeros_like(tokens, dtype=torch.bool)
    else:
        if cond_mask is None:
            raise InputError(f"task {task.name!r}: cond_mask (bool, True on condition tokens) is required")
        cond_tokens = _flat("cond_tokens", cond_tokens, b, n, torch.long)
        cond_mask = _flat("cond_mask", cond_mask, b, n, torch.bool)
    prompt = _prompt_ids(model, task, b, device)
    label = _class_ids(model, task, labels, b, device)

    sampler = config.sampler()
    if bool(getattr(model, "causal", False)) != bool(sampler.causal):
        kind = "a causal model" if sampler.causal else "a bidirectional model"
        raise InputError(f"method {config.method!r} trains {kind} (MaskedTransformer(causal={sampler.causal}))")
    if config.condition_dropout:
        # Classifier-free guidance training: the dropped example sees neither class nor z~, which is
        # exactly the unconditional pass of guided decoding (uncond_masked_inputs in the authors'
        # videogvt/train_lib/mask_utils.py).
        drop = torch.rand(b, generator=generator, device=device) < config.condition_dropout
        label = torch.where(drop, torch.full_like(label, model.vocab.uncond_id), label)
        cond_mask = cond_mask & ~drop[:, None]
    scheduler = scheduler or _scheduler(config.schedule)
    positions = _mask(sampler.maskable(cond_mask), config, scheduler, generator)
    masked = sampler.training_inputs(tokens, cond_tokens, cond_mask, positions, model.vocab.mask_id,
                                     config.loss_weights(sampler))
    logits = model(masked.inputs, prompt, label, masked.prefix, masked.prefix_index)
    ce = smoothed_cross_entropy(logits, masked.targets, config.label_smoothing)
    loss, per_example = weighted_loss(ce, masked.weights)
    with torch.no_grad():
        hits = (logits.argmax(dim=-1) == masked.targets) & masked.masked
        accuracy = hits.sum() / masked.masked.sum().clamp(min=1)
    return LossOutput(loss, per_example, accuracy, masked, task.name)


# -- video level ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _frozen(tokenizer: Tokenizer, device: torch.device) -> Iterator[None]:
    """Eval mode, no gradients and float32 for the tokenizer (the authors' frozen EMA encoder) encoding on
    ``device``; mode restored.

    float32 also under the trainer's autocast (:mod:`magvit.precision`): the tokens are the targets, the same
    as the token shards hold (``magvit data tokenize`` encodes in float32), and the tokenizer's lean inference
    route writes into buffers of one dtype.
    """
    was_training = tokenizer.training
    if was_training:
        tokenizer.eval()
    try:
        with torch.no_grad(), autocast_off(device):
            yield
    finally:
        if was_training:
            tokenizer.train()


class MultiTaskObjective:
    """Multi-task masked token modelling on videos (paper Sec. 3.2; the authors' ``maskgvt_trainer.py``).

    Args:
        tokenizer: the frozen tokenizer.
        tasks: the configured tasks (their prompts must be in the model's vocabulary).
        task_weights: sampling weight per task (default 1 each).
        config: :class:`ObjectiveConfig`.
        seed: seed of the task cycle's shuffle.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        tasks: Sequence[Task],
        *,
        task_weights: Sequence[float] | None = None,
        config: ObjectiveConfig = ObjectiveConfig(),
        seed: int = 0,
    ) -> None:
        if not tasks:
            raise InputError("MultiTaskObjective needs at least one task")
        weights = [1.0] * len(tasks) if task_weights is None else list(task_weights)
        if len(weights) != len(tasks):
            raise InputError(f"got {len(weights)} task weights for {len(tasks)} tasks")
        self.tokenizer = tokenizer
        self.tasks = list(tasks)
        self.config = config
        self.cycle = TaskCycle(weights, seed)
        self.scheduler = _scheduler(config.schedule)

    def task_for_step(self, step: int) -> Task:
        return self.tasks[self.cycle[step]]

    def tokenize(self, video: Tensor, task: Task, generator: torch.Generator | None = None) -> TokenBatch:
        """Ground-truth tokens and ``task``'s condition tokens, from one ``encode`` call
        (as the authors' ``tokenize_with_cond``)."""
        b = video.shape[0]
        if not task.needs_video:
            with _frozen(self.tokenizer, video.device):
                tokens = self.tokenizer.encode(video)
            flat = tokens.reshape(b, -1)
            return TokenBatch(flat, None, torch.zeros_like(flat, dtype=torch.bool))
        cond = task.condition(video, generator)
        with _frozen(self.tokenizer, video.device):
            both = self.tokenizer.encode(torch.cat([video, cond.video]))
        tokens, cond_tokens = both.reshape(2 * b, -1).chunk(2)
        mask = task_token_mask(task, cond.mask, self.tokenizer.downsample, self.config.token_rule)
        return TokenBatch(tokens, cond_tokens, mask.reshape(b, -1))

    def tokens_for(self, batch: ClipBatch, task: Task, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> TokenBatch:
        """``task``'s tokens of ``batch`` on ``device`` (None: where they are): the ones the batch carries
        (token shards), else its video tokenised by :meth:`tokenize`. Only what is missing is encoded, as
        muse-maskgit's ``MaskGit.forward(images_or_ids)``.

        Raises:
            InputError: the batch lacks some of ``task``'s tokens and holds no video to make them from.
        """
        cached = batch.tokens_for(task)
        if cached is not None:
            return cached if device is None else cached.to(device)
        if batch.video is None:
            raise InputError(f"task {task.name!r}: the batch holds neither its tokens nor video to tokenise; "
                             "cache the task in the token shards, or store the clips with them (store_video)")
        return self.tokenize(batch.video if device is None else batch.video.to(device), task, generator)

    def __call__(
        self,
        model: Any,
        batch: ClipBatch,
        step: int,
        generator: torch.Generator | None,
        *,
        device: torch.device | str | None = None,
    ) -> LossOutput:
        """The loss of training step ``step`` on ``batch`` (video, tokens or both; :meth:`tokens_for`).

        ``device``: where ``model`` runs; the tensors the step uses are moved there (None: where they are).
        """
        task = self.task_for_step(step)
        tokens = self.tokens_for(batch, task, generator, device)
        labels = batch.label if device is None else batch.label.to(device)
        return token_loss(model, tokens.tokens, tokens.cond_tokens, tokens.cond_mask, labels, task, generator,
                          self.config, self.scheduler)
