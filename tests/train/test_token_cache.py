"""The token cache's format and reader: stored members, batches, order and splits as the clip loader's."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from magvit.batch import ClipBatch
from magvit.data import make_loader
from magvit.errors import InputError
from magvit.train.token_cache import make_token_loader, read_token_meta
from tests.train.conftest import FRAMES, SHARDED_CLIPS, SIZE


def test_stored_members_and_dtypes(sharded_tokens):
    with tarfile.open(sharded_tokens / "shard-000000.tar") as tar:
        names = tar.getnames()
        key = names[0].split(".", 1)[0]
        members = {n.split(".", 1)[1] for n in names if n.startswith(key + ".")}
        mask = np.load(io.BytesIO(tar.extractfile(f"{key}.mask-fp.npy").read()))
    assert {"tok.npy", "cls", "cond-fp.npy", "mask-fp.npy"} <= members
    assert "cond-cg.npy" not in members and "npy" not in members  # cg stores no condition; no clips
    assert mask.dtype == bool and mask[0].all() and not mask[1:].any()  # fp k=1: first latent frame only
    meta = json.loads((sharded_tokens / "meta.json").read_text())
    assert meta["format"] == "magvit-tokens" and meta["complete"] and len(meta["tokenizer_sha256"]) == 64
    assert meta["batch_size"] == 4
    assert {"name": "fp", "config": {"cond_frames": 1, "cond_latent_frames": None, "prompt": "fp"}} in meta["tasks"]


def test_the_loader_yields_clip_batches_of_tokens_and_the_asked_conditions(sharded_tokens):
    meta = read_token_meta(sharded_tokens)
    grid = tuple(meta.token_grid)
    batch = next(iter(make_token_loader(sharded_tokens, 4, tasks=["fp", "opc", "cg"], shuffle=False)))
    assert isinstance(batch, ClipBatch) and len(batch) == 4 and batch.video is None
    assert batch.tokens.dtype == torch.long and tuple(batch.tokens.shape) == (4, *grid)
    assert set(batch.cond_tokens) == set(batch.cond_mask) == {"fp", "opc"}  # cg has no visual condition
    assert batch.cond_tokens["fp"].dtype == torch.long and batch.cond_mask["fp"].dtype == torch.bool
    assert tuple(batch.cond_mask["opc"].shape) == (4, *grid) and batch.label.dtype == torch.long


def test_the_loader_refuses_tasks_and_clips_the_folder_does_not_hold(sharded_tokens):
    with pytest.raises(InputError, match=r"tasks \['unc'\] are not cached"):
        make_token_loader(sharded_tokens, 4, tasks=["fp", "unc"])
    with pytest.raises(InputError, match="holds no clips"):
        make_token_loader(sharded_tokens, 4, video=True)
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        make_token_loader(sharded_tokens, 0)


@pytest.mark.parametrize("resampled", [False, True])
def test_token_loader_orders_samples_like_the_clip_loader(sharded, sharded_tokens, resampled):
    opts = {"shuffle": True, "seed": 7, "shuffle_buffer": 6, "resampled": resampled,
            "batches_per_epoch": 4 if resampled else None}
    clips = make_loader(sharded, 3, **opts)
    tokens = make_token_loader(sharded_tokens, 3, tasks=["fp"], **opts)
    for epoch in range(2):
        clips.set_epoch(epoch)
        tokens.set_epoch(epoch)
        a = [k for b in clips for k in b.keys]
        b = [k for b in tokens for k in b.keys]
        assert a == b and len(a) == (12 if resampled else SHARDED_CLIPS)
    batch = next(iter(tokens))
    assert set(batch.cond_tokens) == {"fp"} and batch.tokens.shape[1:] == batch.cond_tokens["fp"].shape[1:]


def test_token_loader_splits_shards_by_node(sharded_tokens, monkeypatch):
    keys = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        keys.append({k for b in make_token_loader(sharded_tokens, 2, shuffle=False) for k in b.keys})
    assert not keys[0] & keys[1] and len(keys[0] | keys[1]) == SHARDED_CLIPS


def test_the_clip_shape_of_the_source_is_recorded(sharded_tokens):
    assert tuple(read_token_meta(sharded_tokens).clip_shape) == (FRAMES, SIZE, SIZE, 3)
