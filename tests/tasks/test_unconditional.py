"""The unconditional task (paper Table 4's B-UNC baseline), what "all" means, and prompt_sharing none."""

from __future__ import annotations

import pytest
import torch

from magvit import registry
from magvit.errors import InputError
from magvit.protocols import task_description, task_title
from magvit.tasks import ALL_TASKS, BASELINE_TASKS, all_task_names, build_task, build_tasks, transformer_prompts

TEN = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"]


def test_unc_has_no_condition_and_no_class():
    unc = build_task("unc")
    video = torch.rand(2, 3, 4, 8, 8)
    cond = unc.condition(video)
    assert (unc.name, unc.prompt, unc.uses_class, unc.needs_video, unc.deterministic) == ("unc", "unc", False, False,
                                                                                          True)
    assert cond.mask.shape == (2, 1, 4, 8, 8) and not cond.mask.any()
    assert torch.equal(cond.video, torch.zeros_like(video))
    assert not unc.analytic_token_mask(4, (1, 2, 2)).any()
    assert (task_title(unc), task_description(unc)) == ("unconditional generation",
                                                        "nothing is given, the whole clip is generated")


def test_all_is_the_papers_ten_and_plugins_and_unc_must_be_named():
    assert list(ALL_TASKS) == TEN and BASELINE_TASKS == ("unc",)
    assert "unc" in registry.task_names()
    assert "unc" not in all_task_names() and all_task_names()[:10] == TEN
    assert [t.name for t in build_tasks("all")] == all_task_names()
    assert [t.name for t in build_tasks("fp,unc")] == ["fp", "unc"]


def test_prompt_sharing_none_gives_the_model_no_prompt():
    tasks = build_tasks(["fp", "opc"], prompt_sharing="none")
    assert [t.prompt for t in tasks] == ["fp", "opc"]  # the tasks keep their keys; the model gets none
    assert transformer_prompts(tasks, "none") == []
    assert transformer_prompts(tasks, "paper") == ["fp", "opc"]
    assert transformer_prompts(build_tasks(["opc", "ipc"], prompt_sharing="code"), "code") == ["op", "op"]
    with pytest.raises(InputError, match="prompt_sharing must be one of"):
        transformer_prompts(tasks, "shared")
