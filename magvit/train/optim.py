"""Optimisers and learning-rate schedules of both stages (the authors'
``videogvt/configs/vqgan2d_ucf101_config.py``, which the 3D-VQ configs extend, and
``videogvt/configs/maskgvt_ucf101_config.py``).

* AdamW with decoupled weight decay applied to kernels only (weight matrices and conv kernels); biases,
  norm scales and embeddings are not decayed (weight decay 0.045 on ``kernel`` params only, as
  ``get_optimizer`` in ``videogvt/train_lib/maskgvt_train_lib.py``).
* Schedule ``lr(step) = base * min(1, step / warm) * 0.5 * (1 + cos(pi * max(0, step - warm) / (total - warm)))``
  (scenic ``compound``: constant * linear_warmup * cosine_decay, the authors' ``lr_configs``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from magvit.train.settings import OptimConfig


def is_decayed(name: str, param: nn.Parameter, module_types: dict[str, type]) -> bool:
    """Kernel parameters only: weights of Linear and Conv layers (not embeddings, norms or biases)."""
    owner = name.rsplit(".", 1)[0] if "." in name else ""
    return name.endswith("weight") and param.dim() >= 2 and not issubclass(module_types.get(owner, object), nn.Embedding)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Split ``module``'s trainable parameters into a decayed (kernels) and an undecayed group."""
    types = {name: type(m) for name, m in module.named_modules()}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (decay if is_decayed(name, p, types) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(module: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel where PyTorch has one (CPU and CUDA).

    Fused is the same update in one pass per tensor, which on the CPU steps the B transformer several
    times faster than the default multi-tensor path (timings: benchmarks/README.md).
    """
    groups = param_groups(module, cfg.weight_decay)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr at ``step`` (the ``compound`` formula above)."""
    warm = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0, step - warmup_steps) / decay_steps)
    return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps))
