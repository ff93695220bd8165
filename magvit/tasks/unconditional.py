"""Unconditional generation (UNC): no class label and no visual condition (paper Table 4's B-UNC baseline).

Every token starts as [MASK] and the class slot holds the "uncond" token: the authors' ``full_generation``
task with ``class_conditional`` off (``get_class_tokens`` in ``videogvt/train_lib/maskgvt_train_lib.py``).
It is a baseline's task, not one of the paper's ten: ``tasks: all`` leaves it out, a config names it.
"""

from __future__ import annotations

import attrs

from magvit.tasks.class_conditional import ClassGeneration


@attrs.frozen
class UnconditionalGeneration(ClassGeneration):
    """UNC: the whole clip is generated from nothing (mask all False, no class label); CG without the label."""

    prompt: str = "unc"
    name = "unc"
    title = "unconditional generation"
    description = "nothing is given, the whole clip is generated"
    uses_class = False
