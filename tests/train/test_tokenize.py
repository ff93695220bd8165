"""Writing the token cache: exact tokens for every task, resumable and rank-split writing, refusals, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from magvit import cli
from magvit.batch import TokenBatch
from magvit.data import make_eval_loader
from magvit.errors import MagvitError
from magvit.objective import MultiTaskObjective
from magvit.pipeline import load_tokenizer
from magvit.tasks import build_tasks
from magvit.train import tokenize as tokenize_mod
from magvit.train.token_cache import make_token_loader, read_token_meta
from magvit.train.tokenize import tokenize_shards
from tests.train.conftest import SHARDED_CLIPS


def test_cached_tokens_equal_on_the_fly_tokens_for_every_task(sharded, sharded_tokens, tokenizer_checkpoint):
    tokenizer, _ = load_tokenizer(tokenizer_checkpoint)
    tasks = build_tasks("all")
    objective = MultiTaskObjective(tokenizer, tasks)
    meta = read_token_meta(sharded_tokens)
    assert meta.token_dtype == "int16" and meta.task_names == tuple(t.name for t in tasks)
    assert "cg" not in meta.conditioned and not meta.has_video
    clips = make_eval_loader(sharded, 4)
    cached = make_token_loader(sharded_tokens, 4, shuffle=False)
    seen = 0
    for video_batch, token_batch in zip(clips, cached, strict=True):
        assert video_batch.keys == token_batch.keys
        assert torch.equal(video_batch.label, token_batch.label)
        for task in tasks:
            expected = objective.tokenize(video_batch.video, task)
            got = token_batch.tokens_for(task)
            assert got.tokens.dtype == torch.long and torch.equal(got.tokens, expected.tokens), task.name
            assert torch.equal(got.cond_mask, expected.cond_mask), task.name
            if expected.cond_tokens is None:
                assert got.cond_tokens is None
            else:
                assert torch.equal(got.cond_tokens, expected.cond_tokens), task.name
        seen += len(token_batch)
    assert seen == SHARDED_CLIPS


def _keys(folder: Path) -> list[str]:
    return [k for b in make_token_loader(folder, 4, shuffle=False) for k in b.keys]


def test_interrupted_run_resumes_without_duplicates(sharded, tokenizer_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "tok"
    real = tokenize_mod._write_shard
    calls = []

    def dies_in_second_shard(url, target, *args):
        calls.append(target.name)
        if len(calls) == 2:  # leave a half-written .partial, as a killed process would
            target.with_name(target.name + ".partial").write_bytes(b"\0" * 700)
            raise KeyboardInterrupt
        return real(url, target, *args)

    monkeypatch.setattr(tokenize_mod, "_write_shard", dies_in_second_shard)
    with pytest.raises(KeyboardInterrupt):
        tokenize_shards(tokenizer_checkpoint, sharded, out, tasks=["fp", "cg"], batch_size=4)
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar"]
    with pytest.raises(MagvitError, match="has not finished"):
        make_token_loader(out, 4)

    monkeypatch.setattr(tokenize_mod, "_write_shard", real)
    report = tokenize_shards(tokenizer_checkpoint, sharded, out, tasks=["fp", "cg"], batch_size=4)
    assert report.complete and report.kept == ("shard-000000.tar",)
    assert [s.name for s in report.written] == ["shard-000001.tar", "shard-000002.tar"]
    assert not list(out.glob("*.partial"))
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == SHARDED_CLIPS
    assert set(keys) == {k for b in make_eval_loader(sharded, 8) for k in b.keys}
    assert read_token_meta(out).num_clips == SHARDED_CLIPS

    # A finished shard that is truncated back to .partial is rewritten, the others are kept.
    (out / "shard-000001.tar").rename(out / "shard-000001.tar.partial")
    again = tokenize_shards(tokenizer_checkpoint, sharded, out, tasks=["fp", "cg"], batch_size=4)
    assert [s.name for s in again.written] == ["shard-000001.tar"] and len(again.kept) == 2
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == SHARDED_CLIPS


def test_ranks_write_interleaved_shards_and_the_last_writes_meta(sharded, tokenizer_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "tok"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    first = tokenize_shards(tokenizer_checkpoint, sharded, out, tasks=["opc"], batch_size=8)
    assert [s.name for s in first.written] == ["shard-000001.tar"] and not first.complete
    assert not read_token_meta(out, require_complete=False).complete
    monkeypatch.setenv("RANK", "0")
    second = tokenize_shards(tokenizer_checkpoint, sharded, out, tasks=["opc"], batch_size=8)
    assert [s.name for s in second.written] == ["shard-000000.tar", "shard-000002.tar"] and second.complete
    meta = read_token_meta(out)
    assert [(s.name, s.num_clips) for s in meta.shards] == [("shard-000000.tar", 8), ("shard-000001.tar", 8),
                                                          ("shard-000002.tar", 4)]


def test_a_different_job_in_the_same_folder_is_refused(sharded, sharded_tokens, tokenizer_checkpoint, tmp_path):
    out = tmp_path / "tok"
    shutil.copytree(sharded_tokens, out)
    with pytest.raises(MagvitError, match=r"\(tasks differ\)"):
        tokenize_shards(tokenizer_checkpoint, sharded, out, tasks="all", task_options={"fp": {"cond_frames": 2}},
                        batch_size=4)
    # the batch size is part of the job: the encoder's rounding depends on it (module docstring)
    with pytest.raises(MagvitError, match=r"\(batch_size differ\)"):
        tokenize_shards(tokenizer_checkpoint, sharded, out, tasks="all", batch_size=8)
    # a folder from before the batch size was recorded resumes at any batch size (nothing is rewritten)
    meta = json.loads((out / "meta.json").read_text())
    del meta["batch_size"]
    (out / "meta.json").write_text(json.dumps(meta))
    report = tokenize_shards(tokenizer_checkpoint, sharded, out, tasks="all", batch_size=8)
    assert report.complete and not report.written and len(report.kept) == 3
    assert read_token_meta(out).batch_size is None  # the kept shards' batch size stays unknown


def test_cli_data_tokenize(sharded, tokenizer_checkpoint, tmp_path, capsys):
    out = tmp_path / "tok"
    code = cli.main(["data", "tokenize", "--tokenizer_checkpoint", str(tokenizer_checkpoint), "--src", str(sharded),
                     "--out", str(out), "--tasks", "fp,cg", "--task_options", '{"fp": {"cond_frames": 2}}'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "complete" in captured.out
    assert f"{SHARDED_CLIPS}/{SHARDED_CLIPS}" in captured.err  # the progress bar counts clips
    meta = read_token_meta(out)
    assert meta.task_names == ("fp", "cg") and meta.tasks[0]["config"]["cond_frames"] == 2
    assert cli.main(["data", "tokenize", "--tokenizer_checkpoint", str(tmp_path / "none.pt"), "--src", str(sharded),
                     "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_task_whose_ground_truth_rounds_differently_keeps_its_own_copy(sharded, tokenizer_checkpoint, tmp_path,
                                                                       monkeypatch):
    real = MultiTaskObjective.tokenize

    def opc_flips_a_code(self, video, task, generator=None):
        out = real(self, video, task, generator)
        if task.name != "opc":
            return out
        tokens = out.tokens.clone()
        tokens[0, 0] = (tokens[0, 0] + 1) % 256  # what a near tie flipped by rounding looks like
        return TokenBatch(tokens, out.cond_tokens, out.cond_mask)

    monkeypatch.setattr(MultiTaskObjective, "tokenize", opc_flips_a_code)
    out = tmp_path / "tok"
    tokenize_shards(tokenizer_checkpoint, sharded, out, tasks=["fp", "opc", "cg"], batch_size=4)
    batch = next(iter(make_token_loader(out, 4, shuffle=False)))
    assert set(batch.task_tokens) == {"opc"}
    fp, opc, cg = build_tasks(["fp", "opc", "cg"])
    fp_tokens, opc_tokens = batch.tokens_for(fp).tokens, batch.tokens_for(opc).tokens
    assert torch.equal(fp_tokens, batch.tokens.reshape(4, -1)) and torch.equal(batch.tokens_for(cg).tokens, fp_tokens)
    assert (opc_tokens != fp_tokens).sum() == 1 and opc_tokens[0, 0] == (fp_tokens[0, 0] + 1) % 256
