"""The shared trainer of both MAGVIT stages (single process or ``torchrun`` DDP).

* :func:`fit` -- one training run from a :class:`~magvit.train.fit_config.FitConfig` (what ``magvit fit`` and
  ``magvit demo --train`` call; :mod:`magvit.train.fit_config` parses and builds one from a YAML config);
* :class:`~magvit.train.trainer.Trainer` -- the loop, checkpoints and resumption;
* :class:`~magvit.train.stage.Stage` -- what a stage provides (phases and their losses);
* :class:`~magvit.train.tokenizer_stage.TokenizerStage` and
  :class:`~magvit.train.transformer_stage.TransformerStage` -- the two stages of the paper;
* the token cache: :func:`~magvit.train.tokenize.tokenize_shards` writes it (``magvit data tokenize``),
  :func:`~magvit.train.token_cache.make_token_loader` reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magvit.train.fit_config import FitConfig
    from magvit.train.run import FitResult, fit

__all__ = ["FitConfig", "FitResult", "fit"]


def __getattr__(name: str) -> Any:
    # `magvit fit --help` imports magvit.train.settings, which runs this file first: the run (torch) and the
    # parser (jsonargparse) load on first use.
    if name in ("fit", "FitResult"):
        from magvit.train import run

        return getattr(run, name)
    if name == "FitConfig":
        from magvit.train.fit_config import FitConfig

        return FitConfig
    raise AttributeError(f"module 'magvit.train' has no attribute {name!r}")
