"""Samplers: MAGVIT's conditioning-and-decoding methods, one module each (paper Tables 5 and 6).

* ``commit`` (:mod:`magvit.samplers.commit`): COMMIT masking (paper Eq. 2) and Algorithm 1; the default.
* ``maskgit`` (:mod:`magvit.samplers.maskgit`): MaskGIT latent masking and MaskGIT decoding.
* ``prefix`` (:mod:`magvit.samplers.prefix`): the condition tokens as a prefix, MaskGIT decoding of the clip.

They register through the ``magvit_add_samplers`` hook like any plugin's; look them up with
:func:`magvit.registry.get_sampler`. The decoding loop shared by all of them is :func:`magvit.decoding.decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from magvit.hookspecs import hookimpl
from magvit.samplers.base import DecodeState, ParallelSampler
from magvit.samplers.commit import CommitSampler, commit_masking
from magvit.samplers.maskgit import MaskGITSampler, latent_masking
from magvit.samplers.prefix import PrefixSampler, prefix_condition

__all__ = ["CommitSampler", "DecodeState", "MaskGITSampler", "ParallelSampler", "PrefixSampler", "commit_masking",
           "latent_masking", "prefix_condition"]


@hookimpl
def magvit_add_samplers() -> Mapping[str, Callable[..., Any]]:
    return {s.name: s for s in (CommitSampler, MaskGITSampler, PrefixSampler)}
