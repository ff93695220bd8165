"""Samplers: MAGVIT's conditioning-and-decoding methods, one module each (paper Tables 5 and 6).

* ``commit`` (:mod:`magvit.samplers.commit`): COMMIT masking (paper Eq. 2) and Algorithm 1; the default.
* ``maskgit`` (:mod:`magvit.samplers.maskgit`): MaskGIT latent masking and MaskGIT decoding (the paper's
  "latent" method; ``latent`` is its alias).
* ``prefix`` (:mod:`magvit.samplers.prefix`): the condition tokens as a prefix, MaskGIT decoding of the clip.
* ``ar`` (:mod:`magvit.samplers.ar`): the autoregressive baseline (the authors' ``lmgvt``), raster order
  with a key/value cache.

They register through the ``magvit_add_samplers`` hook like any plugin's; look them up with
:func:`magvit.registry.get_sampler`. The decoding loop shared by all of them is :func:`magvit.decoding.decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from magvit.hookspecs import hookimpl
from magvit.samplers.ar import ARDecodeState, ARSampler, lm_inputs
from magvit.samplers.base import DecodeState, ParallelSampler, transformer_options
from magvit.samplers.commit import CommitSampler, commit_masking
from magvit.samplers.maskgit import MaskGITSampler, latent_masking
from magvit.samplers.prefix import PrefixSampler, prefix_condition

__all__ = ["ARDecodeState", "ARSampler", "CommitSampler", "DecodeState", "MaskGITSampler", "ParallelSampler",
           "PrefixSampler", "commit_masking", "latent_masking", "lm_inputs", "prefix_condition",
           "transformer_options"]


@hookimpl
def magvit_add_samplers() -> Mapping[str, Callable[..., Any]]:
    return {s.name: s for s in (CommitSampler, MaskGITSampler, PrefixSampler, ARSampler)}
