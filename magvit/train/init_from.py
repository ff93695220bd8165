"""Start a 3D-VQ from a trained 2D-VQ by inflation (MAGVIT paper Sec. 3.1 and Table 7, "3D-VQ initialised
from 2D-VQ"; the authors' ``init_from.inflation`` and ``inflate_2d_to_3d`` in
``videogvt/train_lib/vqgan_train_lib.py``).

The tokenizer stage takes ``init_from: {checkpoint: PATH, inflation: central | average}``, PATH a
tokenizer-stage checkpoint of a per-frame tokenizer (``vq2d``). The 2D generator's EMA weights (the copy
used as the tokenizer, :func:`magvit.pipeline.load_tokenizer`) are inflated into the 3D-VQ, and the 2D
discriminator's weights into the discriminator, as the authors inflate both; the trainer's EMA of the
generator then starts from the inflated weights.

The 3D-VQ must have the 2D-VQ's widths and codebook (same preset and size options): a 2D tensor whose shape
does not map to its 3D entry is an error. A 3D entry the 2D state has no tensor for keeps its
initialisation and is named; so is a discriminator entry whose shape does not map (its dense layer when the
3D discriminator does not pool time down to one frame), which the authors' code also leaves at its
initialisation with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs
from torch import nn

from magvit import checkpoint as ckpt
from magvit.errors import MagvitError
from magvit.pipeline import load_tokenizer
from magvit.tokenizers.inflation import INFLATION_MODES, InflationReport, inflate_2d_to_3d
from magvit.train.settings import SettingError


def _inflation_mode(instance: Any, attribute: Any, value: Any) -> None:
    if value not in INFLATION_MODES:
        raise SettingError(type(instance), attribute.name, f"must be one of {list(INFLATION_MODES)}", value)


@attrs.frozen
class InitFrom:
    """Where a 3D-VQ's initial weights come from.

    Attributes:
        checkpoint: a tokenizer-stage checkpoint (``last.pt`` of ``magvit fit``) of a 2D-VQ.
        inflation: ``central`` (the paper's: the 2D kernel in the temporal centre slice, zeros elsewhere) or
            ``average`` (the 2D kernel divided by the temporal size in every slice).
    """

    checkpoint: str
    inflation: str = attrs.field(default="central", validator=_inflation_mode)


@attrs.frozen
class InitRecord:
    """What an inflation did, kept in the checkpoint's extra state (:meth:`to_plain`).

    Attributes:
        checkpoint, inflation: as :class:`InitFrom`.
        generator: the report of the tokenizer's inflation.
        discriminator: the report of the discriminator's.
    """

    checkpoint: str
    inflation: str
    generator: InflationReport
    discriminator: InflationReport

    def unmapped(self) -> list[str]:
        """``"generator.<name> (<why>)"`` for every entry left at its initialisation."""
        return [f"{part}.{name} ({why})" for part, report in (("generator", self.generator),
                                                               ("discriminator", self.discriminator))
                for name, why in report.unmapped]

    def to_plain(self) -> dict[str, Any]:
        """Plain data (strings and lists) for the checkpoint."""
        def plain(report: InflationReport) -> dict[str, Any]:
            return {"copied": len(report.copied), "inflated": len(report.inflated),
                    "unmapped": [[name, why] for name, why in report.unmapped], "unused": list(report.unused)}

        return {"checkpoint": self.checkpoint, "inflation": self.inflation,
                "generator": plain(self.generator), "discriminator": plain(self.discriminator)}

    def message(self) -> str:
        """One line for the run's output, naming every entry left at its initialisation and every unused one."""
        g = self.generator
        text = (f"init_from: {self.inflation} inflation of the 2D-VQ {self.checkpoint}: generator {len(g.inflated)} "
                f"kernels inflated, {len(g.copied)} tensors copied; discriminator {len(self.discriminator.inflated)} "
                f"inflated, {len(self.discriminator.copied)} copied")
        left = self.unmapped()
        text += "; left at their initialisation: " + ", ".join(left) if left else "; every 3D entry was mapped"
        unused = [f"{part}.{name}" for part, report in (("generator", g), ("discriminator", self.discriminator))
                  for name in report.unused]
        return text + ("; 2D entries not used: " + ", ".join(unused) if unused else "")


def inflate_from_checkpoint(init_from: InitFrom, tokenizer: nn.Module, discriminator: nn.Module) -> InitRecord:
    """Load ``init_from.checkpoint``'s 2D-VQ into ``tokenizer`` (a 3D tokenizer) and its discriminator into
    ``discriminator`` by inflation, in place.

    Raises:
        MagvitError: the checkpoint is not a tokenizer-stage checkpoint of a per-frame tokenizer, ``tokenizer``
            is not 3D, or a 2D tensor's shape does not map to the 3D-VQ's (another size).
    """
    path = init_from.checkpoint
    if getattr(tokenizer, "spatial_dims", None) != 3:
        raise MagvitError(f"init_from inflates a 2D-VQ into a 3D tokenizer, but the configured tokenizer "
                          f"{getattr(tokenizer, 'name', type(tokenizer).__name__)!r} is not 3D; set "
                          "model.init_args.tokenizer to vq3d, or drop init_from")
    source, spec = load_tokenizer(path)
    if getattr(source, "spatial_dims", None) != 2:
        raise MagvitError(f"init_from.checkpoint {path!r} holds a {spec['name']!r} tokenizer; inflation needs a "
                          "per-frame 2D-VQ (vq2d) trained by the tokenizer stage")
    state = ckpt.load(path)
    disc_state = (state.get("models") or {}).get("discriminator")
    if not isinstance(disc_state, dict):
        raise MagvitError(f"init_from.checkpoint {path!r} has no discriminator weights (models.discriminator); "
                          "pass a last.pt written by the tokenizer stage")
    with warnings.catch_warnings():
        # the reports are turned into one message (InitRecord.message) and an error for a size mismatch
        warnings.simplefilter("ignore")
        generator = inflate_2d_to_3d(source.state_dict(), tokenizer, init_from.inflation)
        if generator.mismatched:
            shown = "; ".join(f"{name}: {why}" for name, why in generator.mismatched[:5])
            raise MagvitError(
                f"init_from: the 2D-VQ of {path!r} does not have the 3D-VQ's size ({len(generator.mismatched)} "
                f"tensors: {shown}); configure the 3D-VQ with the 2D-VQ's preset and size options "
                f"(the 2D-VQ: {dict(spec['config'])})"
            )
        disc = inflate_2d_to_3d(disc_state, discriminator, init_from.inflation)
    return InitRecord(path, init_from.inflation, generator, disc)
