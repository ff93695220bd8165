"""The MAGVIT transformer: a post-LN bidirectional BERT over ``[task prompt, class, visual tokens]``.

Implements paper Sec. 3.2 ("a bidirectional transformer") with the exact architecture of the authors'
``videogvt/models/simplified_bert.py``:

* block: ``x = LN(x + Drop(MHSA(x)))``, ``x = LN(x + Drop(W2 gelu_tanh(W1 x)))``, LayerNorm eps 1e-12;
* embedding: ``LN(word + position)`` then dropout; learned absolute 1-D positions over the sequence;
* head: ``Dense(hidden) -> gelu -> LN -> h E^T + bias`` with ``E`` the (tied) word embedding;
* init: truncated normal (sigma 0.02, cut at +-2 sigma) for every kernel and embedding, zero biases.

Two baselines of the paper share the module:

* prefix condition (paper Table 5): condition tokens are prepended after the class token. The paper does
  not say how they are positioned; we give each prefix token the position embedding of the visual
  position it came from plus a learned "condition segment" embedding, so the position table stays
  ``2 + N`` and the model can tell a prefix token from the visual token at the same position.
* autoregressive (paper Table 6; the authors' ``lmgvt``, ``videogvt/train_lib/maskgvt_train_lib.py:
  generate_tokens_for_lm``): ``causal=True`` reads ``[BOS] [prompt] [class] [condition tokens] [SEP]
  [visual tokens]`` shifted right by BOS (the authors use the [MASK] id as BOS), masks attention to the past
  and adds a key/value cache (:meth:`MaskedTransformer.init_cache`, :meth:`MaskedTransformer.start`,
  :meth:`MaskedTransformer.step`) for raster-order decoding. Its vocabulary has a separator slot
  (``Vocabulary.separator``); a bidirectional model's has none. The condition tokens are positioned as the
  prefix-condition ones (visual slot + condition segment); the authors, with one task (frame prediction),
  number the whole sequence, so their visual positions shift with the condition length.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from magvit import kernels
from magvit.config import option_names, register_to_config
from magvit.errors import InputError
from magvit.kernels.dropout import Dropout, attention_with_dropout
from magvit.limits import check_bool, check_int, check_number, check_parameter_count
from magvit.precision import Float32LayerNorm

__all__ = ["PRESETS", "KVCache", "MaskedTransformer", "TransformerSize", "Vocabulary", "count_parameters"]

# LayerNorm epsilon of the authors' BERT (TF_LAYERNORM_EPSILON).
LN_EPS = 1e-12
# The authors' init: truncated normal, sigma 0.02, truncated at +-2 sigma.
INIT_STD = 0.02


# -- vocabulary ---------------------------------------------------------------------------------------


def _unique(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(keys))


@attrs.frozen
class Vocabulary:
    """Token ids of the transformer (the authors' ``get_bert_model``, adapted to named prompts).

    Layout: codes ``[0, K)``; class ``c`` -> ``K + c``; "uncond" -> ``K + C``; one id per prompt key after
    that (in the given order, duplicates collapsed); then, for a causal model only (``separator``), the
    [SEP] token between the condition tokens and the clip (the authors' ``SpecialTokens.SEP``); then
    ``[MASK]`` as the last row (the authors address it as id -1, i.e. the last row). A model config stores ``prompts`` by name, so a checkpoint carries the
    mapping and a third-party task gets its own prompt token just by being configured.
    """

    codebook_size: int
    num_classes: int = 0
    prompts: tuple[str, ...] = attrs.field(default=(), converter=_unique)
    separator: bool = False

    def __attrs_post_init__(self) -> None:
        if self.codebook_size < 2:
            raise InputError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.num_classes < 0:
            raise InputError(f"num_classes must be >= 0, got {self.num_classes}")

    @property
    def uncond_id(self) -> int:
        """The "uncond" class token, used by every task that ignores the label."""
        return self.codebook_size + self.num_classes

    @property
    def separator_id(self) -> int:
        """The [SEP] token of a causal model's sequence."""
        if not self.separator:
            raise InputError("this vocabulary has no separator token (only causal models have one)")
        return self.codebook_size + self.num_classes + 1 + len(self.prompts)

    @property
    def mask_id(self) -> int:
        """[MASK]; a causal model's BOS too (the authors' ``lm_tokens`` use the [MASK] id as BOS)."""
        return self.codebook_size + self.num_classes + 1 + len(self.prompts) + int(self.separator)

    @property
    def size(self) -> int:
        return self.mask_id + 1

    @property
    def num_prefix(self) -> int:
        """Non-visual tokens before the clip: prompt (multi-task only) and class."""
        return 2 if self.prompts else 1

    def class_id(self, label: int | None) -> int:
        """Token id of class ``label``; ``None`` (or a negative label) is the "uncond" token."""
        if label is None or label < 0:
            return self.uncond_id
        if label >= self.num_classes:
            raise InputError(f"class label must be in [0, {self.num_classes}) or None, got {label}")
        return self.codebook_size + int(label)

    def class_ids(self, labels: Tensor | None, batch_size: int, device: Any = None) -> Tensor:
        """Long ``[B]`` class-token ids of ``labels`` (long ``[B]``, negative = uncond); ``None`` -> all uncond."""
        if labels is None:
            return torch.full((batch_size,), self.uncond_id, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, device=device)
        if labels.dtype not in (torch.int64, torch.int32) or tuple(labels.shape) != (batch_size,):
            raise InputError(f"labels must be an integer tensor of shape ({batch_size},), got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise InputError(f"class labels must be < num_classes={self.num_classes}, got {int(labels.max())}")
        labels = labels.long()
        return torch.where(labels < 0, torch.full_like(labels, self.uncond_id), labels + self.codebook_size)

    def prompt_id(self, key: str) -> int:
        """Token id of the task prompt ``key``."""
        if key not in self.prompts:
            known = ", ".join(self.prompts) or "none (single-task model)"
            raise InputError(f"unknown task prompt {key!r}; this model knows the prompts: {known}")
        return self.codebook_size + self.num_classes + 1 + self.prompts.index(key)


# -- sizes ----------------------------------------------------------------------------------------------


@attrs.frozen
class TransformerSize:
    """Depth and width of a preset (the authors' ``config.transformer``)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    mlp_dim: int


PRESETS: dict[str, TransformerSize] = {
    # CPU tests and the demo.
    "tiny": TransformerSize(num_layers=4, hidden_size=256, num_heads=4, mlp_dim=1024),
    "B": TransformerSize(num_layers=12, hidden_size=768, num_heads=12, mlp_dim=3072),
    "L": TransformerSize(num_layers=24, hidden_size=1024, num_heads=16, mlp_dim=4096),
}


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device too)."""
    return sum(p.numel() for p in module.parameters())


# Upper bounds of the size arguments (magvit.limits): far above any MAGVIT model, they only refuse absurd
# values from a forged or corrupt config before anything is allocated.
MAX_CODEBOOK = 2**20
MAX_CLASSES = 2**20
MAX_TOKENS = 2**17
MAX_LAYERS = 512
MAX_WIDTH = 2**16


def parameter_count(vocab_size: int, positions: int, num_layers: int, hidden_size: int, mlp_dim: int,
                    prefix_condition: bool = False) -> int:
    """Parameters of a :class:`MaskedTransformer` of this size, computed without building it."""
    h, m = hidden_size, mlp_dim
    block = 4 * h * h + 2 * h * m + 9 * h + m  # qkv, proj, fc1, fc2 with biases, two LayerNorms
    embeddings = (vocab_size + positions) * h + 2 * h + (h if prefix_condition else 0)
    head = h * h + 3 * h + vocab_size
    return embeddings + num_layers * block + head


def _check_arguments(codebook_size: Any, num_classes: Any, prompts: Any, num_tokens: Any, num_layers: Any,
                     hidden_size: Any, num_heads: Any, mlp_dim: Any, dropout: Any, attention_dropout: Any,
                     causal: Any, prefix_condition: Any, init_seed: Any, activation_checkpointing: Any) -> None:
    """Types, ranges and the implied parameter count of the constructor arguments, before any allocation."""
    owner = "MaskedTransformer"
    check_int(owner, "codebook_size", codebook_size, 2, MAX_CODEBOOK)
    check_int(owner, "num_classes", num_classes, 0, MAX_CLASSES)
    check_int(owner, "num_tokens", num_tokens, 1, MAX_TOKENS)
    check_int(owner, "num_layers", num_layers, 1, MAX_LAYERS)
    check_int(owner, "hidden_size", hidden_size, 1, MAX_WIDTH)
    check_int(owner, "num_heads", num_heads, 1, hidden_size)
    check_int(owner, "mlp_dim", mlp_dim, 1, 4 * MAX_WIDTH)
    if hidden_size % num_heads:
        raise InputError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    check_number(owner, "dropout", dropout, 0.0, 1.0, high_open=True)
    check_number(owner, "attention_dropout", attention_dropout, 0.0, 1.0, high_open=True)
    check_bool(owner, "causal", causal)
    check_bool(owner, "prefix_condition", prefix_condition)
    check_int(owner, "init_seed", init_seed, -(2**63))
    check_bool(owner, "activation_checkpointing", activation_checkpointing)
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise InputError(f"{owner}: prompts must be a list of prompt keys (strings), got {prompts!r}")
    vocab_size = codebook_size + num_classes + len(set(prompts)) + 2 + int(causal)
    positions = 2 + num_tokens + 2 * int(causal)  # a causal model adds BOS and SEP
    count = parameter_count(vocab_size, positions, num_layers, hidden_size, mlp_dim, prefix_condition or causal)
    check_parameter_count(owner, count, f"num_layers={num_layers}, hidden_size={hidden_size}, mlp_dim={mlp_dim}, "
                                       f"codebook_size={codebook_size}, num_tokens={num_tokens}")


# -- layers ---------------------------------------------------------------------------------------------


@attrs.define
class KVCache:
    """Per-layer key/value buffers ``[B, heads, L, head_dim]`` of a causal model; ``length`` are filled.

    ``condition_length``: the condition tokens in the cache, which take cache slots but no position of
    their own (they share their visual slot's).
    """

    keys: list[Tensor]
    values: list[Tensor]
    length: int = 0
    condition_length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``; in training with attention dropout
    and no attention mask, through :func:`~magvit.kernels.dropout.attention_with_dropout` when ``cpu_dropout``
    (:func:`magvit.kernels.current` when built)."""

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout = attention_dropout
        self.cpu_dropout = kernels.current().cpu_dropout

    def forward(self, x: Tensor, causal: bool = False, cache: tuple[KVCache, int] | None = None) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None
        if cache is not None:
            kv, layer = cache
            start = kv.length
            kv.keys[layer][:, :, start : start + s] = k
            kv.values[layer][:, :, start : start + s] = v
            k, v = kv.keys[layer][:, :, : start + s], kv.values[layer][:, :, : start + s]
            if s > 1:  # new queries see the cache and the new keys up to themselves
                keys = torch.arange(start + s, device=x.device)
                mask = keys[None] <= torch.arange(start, start + s, device=x.device)[:, None]
            causal = False
        drop = self.attention_dropout if self.training else 0.0
        if drop > 0 and self.cpu_dropout and mask is None:
            out = attention_with_dropout(q, k, v, drop, causal)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal)
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


class FeedForward(nn.Module):
    """BERT's MLP ``W2 gelu_tanh(W1 x)`` then dropout; parameters ``fc1``/``fc2``.

    Written here rather than taken from ``timm.layers.Mlp`` (same parameter names, so checkpoints are
    unchanged): importing timm imports torchvision, torch._dynamo and sympy, resident memory that every
    generating process would carry against generation's memory budget (both figures: benchmarks/README.md).
    """

    def __init__(self, hidden_size: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, hidden_size)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class PostLNBlock(nn.Module):
    """One BERT block, post-LN: ``LN(x + Drop(MHSA(x)))`` then ``LN(x + Drop(MLP(x)))``."""

    def __init__(self, size: TransformerSize, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(size.hidden_size, size.num_heads, attention_dropout)
        self.attn_drop = Dropout(dropout)
        self.norm1 = Float32LayerNorm(size.hidden_size, eps=LN_EPS)
        self.mlp = FeedForward(size.hidden_size, size.mlp_dim, dropout)
        self.norm2 = Float32LayerNorm(size.hidden_size, eps=LN_EPS)

    def forward(self, x: Tensor, causal: bool = False, cache: tuple[KVCache, int] | None = None) -> Tensor:
        x = self.norm1(x + self.attn_drop(self.attn(x, causal, cache)))
        return self.norm2(x + self.mlp(x))


class TiedHead(nn.Module):
    """``Dense -> gelu -> LN -> h E^T + b`` with ``E`` the word embedding (tied)."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = Float32LayerNorm(hidden_size, eps=LN_EPS)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, embedding: Tensor, num_logits: int) -> Tensor:
        # Only codebook logits are ever used (the authors slice them too), so only those rows are multiplied.
        h = self.norm(F.gelu(self.dense(h), approximate="tanh"))
        return F.linear(h, embedding[:num_logits], self.bias[:num_logits])


# -- the model ------------------------------------------------------------------------------------------


class MaskedTransformer(nn.Module):
    """Bidirectional (or causal) post-LN BERT over ``[prompt] + [class] + N`` visual tokens.

    Args:
        codebook_size: K, number of visual codes.
        num_classes: C (0 for unlabelled data such as BAIR).
        prompts: prompt keys of the configured tasks; duplicates collapse. Empty = single-task model
            without a prompt token (as the authors' single-task models).
        num_tokens: N, visual tokens per clip (``t*h*w``; 1024 in the paper).
        num_layers, hidden_size, num_heads, mlp_dim: size.
        dropout, attention_dropout: 0.1 each in the paper.
        causal: autoregressive baseline (paper Table 6) instead of the bidirectional model; adds the [SEP]
            token to the vocabulary and the condition-segment embedding.
        prefix_condition: add the condition-segment embedding used by the prefix-condition baseline.
        init_seed: seed of the truncated-normal init.
        activation_checkpointing: in training mode, run each block of a full-sequence pass under
            non-reentrant ``torch.utils.checkpoint``: its activations are recomputed in the backward pass
            instead of kept. Values and gradients are unchanged (the recomputation restores the global RNG
            state, so the dropouts draw the same masks). Never in eval mode (generation: the first
            ``checkpoint`` call imports ``torch._dynamo``, resident memory a generating process would carry)
            nor for decoding with a key/value cache, which writes the cache.

    ``self.config`` holds all constructor arguments (:func:`magvit.config.register_to_config`), so
    ``MaskedTransformer(**model.config)`` rebuilds it.
    """

    @register_to_config
    def __init__(
        self,
        codebook_size: int,
        num_classes: int = 0,
        prompts: Sequence[str] = (),
        num_tokens: int = 1024,
        num_layers: int = 12,
        hidden_size: int = 768,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        causal: bool = False,
        prefix_condition: bool = False,
        init_seed: int = 0,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _check_arguments(codebook_size, num_classes, prompts, num_tokens, num_layers, hidden_size, num_heads,
                         mlp_dim, dropout, attention_dropout, causal, prefix_condition, init_seed,
                         activation_checkpointing)
        self.vocab = Vocabulary(codebook_size, num_classes, tuple(prompts), separator=causal)
        size = TransformerSize(num_layers, hidden_size, num_heads, mlp_dim)
        self.num_tokens = num_tokens
        self.causal = causal
        self.activation_checkpointing = activation_checkpointing
        self.word = nn.Embedding(self.vocab.size, hidden_size)
        # Learned absolute positions over the whole sequence (2 + N in multi-task mode), as in the authors' BERT;
        # a causal model's sequence adds BOS and SEP.
        self.position = nn.Embedding(self.vocab.num_prefix + num_tokens + 2 * int(causal), hidden_size)
        self.segment = nn.Parameter(torch.empty(hidden_size)) if prefix_condition or causal else None
        self.embed_norm = Float32LayerNorm(hidden_size, eps=LN_EPS)
        self.embed_drop = Dropout(dropout)
        self.blocks = nn.ModuleList(PostLNBlock(size, dropout, attention_dropout) for _ in range(num_layers))
        self.head = TiedHead(hidden_size, self.vocab.size)
        self.reset_parameters(torch.Generator().manual_seed(init_seed))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MaskedTransformer:
        """Rebuild a model from its :attr:`config` (e.g. read from a checkpoint); unknown keys are an error."""
        if not isinstance(config, Mapping):
            raise InputError(f"a transformer config must be a mapping of constructor arguments, got "
                             f"{type(config).__name__}")
        known = option_names(cls) or []
        unknown = sorted(str(k) for k in config if k not in known)
        if unknown:
            raise InputError(f"unknown transformer option {unknown[0]!r}; known: {', '.join(known)}")
        if "codebook_size" not in config:
            raise InputError("the transformer config has no codebook_size")
        return cls(**config)

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        codebook_size: int,
        num_classes: int,
        prompts: Sequence[str],
        num_tokens: int = 1024,
        **overrides: Any,
    ) -> MaskedTransformer:
        """Build preset ``"tiny"``, ``"B"`` or ``"L"``; ``overrides`` replace any constructor argument."""
        if name not in PRESETS:
            raise InputError(f"unknown transformer preset {name!r}; expected one of {sorted(PRESETS)}")
        base = {"codebook_size": codebook_size, "num_classes": num_classes, "prompts": prompts,
                "num_tokens": num_tokens}
        return cls.from_config(base | attrs.asdict(PRESETS[name]) | overrides)

    @property
    def codebook_size(self) -> int:
        return self.vocab.codebook_size

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Truncated normal (0.02, +-2 sigma) kernels and embeddings, zero biases."""
        init = functools.partial(nn.init.trunc_normal_, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD,
                                 generator=generator)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                init(module.weight)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.segment is not None:
            init(self.segment)
        nn.init.zeros_(self.head.bias)

    # -- input checks ----------------------------------------------------------------------------------
    def _check_ids(self, name: str, ids: Tensor, shape: tuple[int, ...]) -> None:
        if not isinstance(ids, Tensor) or ids.dtype != torch.long or tuple(ids.shape) != shape:
            got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise InputError(f"{name} must be a long tensor of shape {shape}, got {got}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab.size):
            raise InputError(f"{name} ids must lie in [0, {self.vocab.size}), got [{int(ids.min())}, {int(ids.max())}]")

    def _prefix_ids(self, prompt: Tensor | None, label: Tensor, batch: int) -> Tensor:
        self._check_ids("label", label, (batch,))
        if not self.vocab.prompts:
            if prompt is not None:
                raise InputError("this single-task model has no prompt token; pass prompt=None")
            return label[:, None]
        if prompt is None:
            raise InputError(f"prompt ids [B] are required; known prompts: {', '.join(self.vocab.prompts)}")
        self._check_ids("prompt", prompt, (batch,))
        return torch.stack([prompt, label], dim=1)

    def shard_units(self) -> list[nn.Module]:
        """What fully sharded training shards on its own (:mod:`magvit.train.sharding`): each block."""
        return list(self.blocks)

    # -- forward ---------------------------------------------------------------------------------------
    def _embed(self, ids: Tensor, positions: Tensor, extra: Tensor | None = None) -> Tensor:
        x = self.word(ids) + self.position(positions)
        if extra is not None:
            x = x + extra
        return x

    def forward(
        self,
        inputs: Tensor,
        prompt: Tensor | None,
        label: Tensor,
        prefix: Tensor | None = None,
        prefix_index: Tensor | None = None,
    ) -> Tensor:
        """Codebook logits ``[B, N, K]`` for the visual tokens.

        Args:
            inputs: long ``[B, N]`` visual inputs (codes, condition codes or ``vocab.mask_id``).
            prompt: long ``[B]`` prompt ids (``vocab.prompt_id``), ``None`` for a single-task model.
            label: long ``[B]`` class ids (``vocab.class_id``: a class or "uncond").
            prefix: long ``[B, P]`` condition tokens (prefix-condition and autoregressive baselines), after the
                class (and, in causal mode, before [SEP]).
            prefix_index: long ``[B, P]`` visual position (in ``[0, N)``) each prefix token came from.

        In causal mode ``logits[:, i]`` predicts ``inputs[:, i]`` from the condition tokens and ``inputs[:, :i]``
        (teacher forcing).
        """
        b = inputs.shape[0] if isinstance(inputs, Tensor) and inputs.dim() == 2 else -1
        self._check_ids("inputs", inputs, (b, self.num_tokens))
        head = self._prefix_ids(prompt, label, b)
        npre = head.shape[1]
        device = inputs.device
        if self.causal:
            # Token i is predicted at the position before it ([SEP] predicts the first); the last visual token
            # is never an input.
            lead = self._causal_lead(head, prefix, prefix_index, b)
            visual = self._embed(inputs[:, :-1], torch.arange(npre + 2, npre + 1 + self.num_tokens, device=device))
            return self._run(torch.cat([lead, visual], dim=1), causal=True)[:, -self.num_tokens :]
        x = self._embed(torch.cat([head, inputs], dim=1), torch.arange(npre + self.num_tokens, device=device))
        if prefix is not None:
            x = torch.cat([x[:, :npre], self._embed_prefix(prefix, prefix_index, b, npre), x[:, npre:]], dim=1)
        elif prefix_index is not None:
            raise InputError("prefix_index was given without prefix")
        return self._run(x, causal=False)[:, -self.num_tokens :]

    def _causal_lead(self, head: Tensor, prefix: Tensor | None, prefix_index: Tensor | None, b: int) -> Tensor:
        """Embeddings of ``[BOS] [prompt] [class] [condition tokens] [SEP]``, the sequence before the clip."""
        npre, device = head.shape[1], head.device
        bos = torch.full((b, 1), self.vocab.mask_id, dtype=torch.long, device=device)
        parts = [self._embed(torch.cat([bos, head], dim=1), torch.arange(npre + 1, device=device))]
        if prefix is not None:
            parts.append(self._embed_prefix(prefix, prefix_index, b, npre + 2))
        elif prefix_index is not None:
            raise InputError("prefix_index was given without prefix")
        sep = torch.full((b, 1), self.vocab.separator_id, dtype=torch.long, device=device)
        parts.append(self._embed(sep, torch.full((1,), npre + 1, dtype=torch.long, device=device)))
        return torch.cat(parts, dim=1)

    def _embed_prefix(self, prefix: Tensor, prefix_index: Tensor | None, b: int, npre: int) -> Tensor:
        if self.segment is None:
            raise InputError("this model was built without prefix_condition=True; it cannot take a condition prefix")
        p = prefix.shape[1] if prefix.dim() == 2 else -1
        self._check_ids("prefix", prefix, (b, p))
        if prefix_index is None:
            raise InputError("prefix_index [B, P] (visual position of each prefix token) is required with prefix")
        if prefix_index.dtype != torch.long or tuple(prefix_index.shape) != (b, p):
            raise InputError(f"prefix_index must be a long tensor of shape {(b, p)}, got {prefix_index.dtype} "
                             f"{tuple(prefix_index.shape)}")
        if p and (int(prefix_index.min()) < 0 or int(prefix_index.max()) >= self.num_tokens):
            raise InputError(f"prefix_index must lie in [0, {self.num_tokens})")
        # Design choice (the paper does not specify): position of the visual slot + a condition segment.
        return self._embed(prefix, prefix_index + npre, self.segment)

    def _run(self, x: Tensor, causal: bool, cache: KVCache | None = None) -> Tensor:
        x = self.embed_drop(self.embed_norm(x))
        for i, block in enumerate(self.blocks):
            if cache is not None:  # a cached step writes the cache: never recomputed
                x = block(x, causal, (cache, i))
            elif self.activation_checkpointing and self.training:
                # Non-reentrant: the recomputation restores the global RNG state the dropouts draw from
                # (magvit.kernels.dropout), so it replays the same masks.
                x = checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal)
        return self.head(x, self.word.weight, self.codebook_size)

    # -- key/value cache (causal mode) -----------------------------------------------------------------
    def init_cache(self, batch_size: int, device: Any = None, dtype: torch.dtype | None = None,
                   condition_length: int = 0) -> KVCache:
        """Empty key/value buffers for the whole sequence: BOS, prompt and class, ``condition_length``
        condition tokens, SEP and the N visual tokens."""
        if not self.causal:
            raise InputError("a key/value cache needs a causal model (built with causal=True)")
        check_int("MaskedTransformer.init_cache", "condition_length", condition_length, 0, self.num_tokens)
        d = self.config["hidden_size"]
        h = self.config["num_heads"]
        shape = (batch_size, h, 2 + self.vocab.num_prefix + condition_length + self.num_tokens, d // h)
        dtype = dtype or self.word.weight.dtype
        device = device if device is not None else self.word.weight.device
        keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.blocks]
        values = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.blocks]
        return KVCache(keys, values)

    def start(self, cache: KVCache, prompt: Tensor | None, label: Tensor, prefix: Tensor | None = None,
              prefix_index: Tensor | None = None) -> Tensor:
        """Feed ``[BOS] [prompt] [class] [prefix] [SEP]`` into an empty ``cache`` (from :meth:`init_cache`
        with ``condition_length`` P); return the logits ``[B, K]`` of the first visual token."""
        if not self.causal:
            raise InputError("start() needs a causal model (built with causal=True)")
        if cache.length:
            raise InputError(f"start() begins a sequence: the cache must be empty, it holds {cache.length} positions")
        b = label.shape[0] if isinstance(label, Tensor) and label.dim() == 1 else -1
        lead = self._causal_lead(self._prefix_ids(prompt, label, b), prefix, prefix_index, b)
        if lead.shape[1] + self.num_tokens > cache.capacity:
            raise InputError(f"the cache holds {cache.capacity} positions; a sequence of {lead.shape[1]} before "
                             f"{self.num_tokens} visual tokens needs more (init_cache(condition_length=P))")
        logits = self._run(lead, causal=True, cache=cache)
        cache.length = lead.shape[1]
        cache.condition_length = 0 if prefix is None else prefix.shape[1]
        return logits[:, -1]

    def step(self, ids: Tensor, cache: KVCache) -> Tensor:
        """Append visual tokens ``ids`` (long ``[B, S]``) after those already in ``cache`` (after
        :meth:`start`); return logits ``[B, S, K]``: ``logits[:, j]`` predicts the token after ``ids[:, j]``."""
        if not self.causal:
            raise InputError("step() needs a causal model (built with causal=True)")
        b, s = ids.shape
        if cache.length + s > cache.capacity:
            raise InputError(f"the cache holds {cache.capacity} positions; cannot append {s} at {cache.length}")
        if not cache.length:
            raise InputError("step() continues a sequence: call start() first")
        self._check_ids("ids", ids, (b, s))
        first = cache.length - cache.condition_length  # condition tokens hold slots but no positions
        positions = torch.arange(first, first + s, device=ids.device)
        logits = self._run(self._embed(ids, positions), causal=True, cache=cache)
        cache.length += s
        return logits
