"""The training batch record: pixels and/or tokens, what it carries for each task, and its refusals."""

from __future__ import annotations

import pytest
import torch

from magvit.batch import ClipBatch, TokenBatch
from magvit.errors import InputError
from magvit.tasks import build_tasks

GRID = (2, 1, 2, 2)  # [B, t, h, w]


def token_batch(**kw) -> ClipBatch:
    tokens = torch.arange(8).reshape(GRID)
    fields = {"label": torch.tensor([3, 5]), "keys": ["a", "b"], "tokens": tokens,
              "cond_tokens": {"fp": tokens + 10}, "cond_mask": {"fp": tokens % 2 == 0}}
    return ClipBatch(**{**fields, **kw})


def test_a_batch_holds_video_tokens_or_both():
    video = torch.rand(2, 3, 4, 8, 8)
    clips = ClipBatch(label=torch.tensor([0, 1]), keys=["a", "b"], video=video)
    assert len(clips) == 2 and clips.tokens is None and clips.keys == ("a", "b")
    assert len(token_batch()) == 2 and token_batch().video is None
    with pytest.raises(InputError, match="holds video, tokens or both; got neither"):
        ClipBatch(label=torch.tensor([0]), keys=["a"])
    with pytest.raises(InputError, match="needs its ground-truth tokens"):
        ClipBatch(label=torch.tensor([0, 1]), keys=["a", "b"], video=video, cond_tokens={"fp": torch.zeros(GRID)},
                  cond_mask={"fp": torch.zeros(GRID, dtype=torch.bool)})
    with pytest.raises(InputError, match=r"tokens for \['fp'\] and masks for \[\]"):
        token_batch(cond_mask={})


def test_tokens_for_a_task_are_flat_and_prefer_the_tasks_own_copy():
    fp, opc, cg = build_tasks(["fp", "opc", "cg"])
    batch = token_batch(task_tokens={"cg": torch.full(GRID, 7)})
    got = batch.tokens_for(fp)
    assert isinstance(got, TokenBatch)
    assert got.tokens.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert got.cond_tokens.tolist() == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert got.cond_mask.tolist() == [[True, False, True, False]] * 2
    cg_tokens = batch.tokens_for(cg)  # no visual condition: its own ground truth, no condition token
    assert cg_tokens.tokens.tolist() == [[7] * 4] * 2 and cg_tokens.cond_tokens is None
    assert cg_tokens.cond_mask.dtype == torch.bool and not cg_tokens.cond_mask.any()
    assert batch.tokens_for(opc) is None  # its condition is not in the batch
    assert ClipBatch(label=torch.tensor([0]), keys=["a"], video=torch.rand(1, 3, 4, 8, 8)).tokens_for(cg) is None


def test_to_moves_every_tensor_and_keeps_the_keys():
    batch = token_batch(video=torch.rand(2, 3, 2, 4, 4), task_tokens={"opc": torch.zeros(GRID, dtype=torch.long)})
    moved = batch.to("cpu")
    assert moved.keys == batch.keys and torch.equal(moved.tokens, batch.tokens) and torch.equal(moved.video, batch.video)
    assert set(moved.cond_tokens) == set(moved.cond_mask) == {"fp"} and set(moved.task_tokens) == {"opc"}
    assert torch.equal(moved.tokens_for(build_tasks(["fp"])[0]).cond_tokens,
                       batch.tokens_for(build_tasks(["fp"])[0]).cond_tokens)
