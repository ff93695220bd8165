"""Shards are complete or absent: the partial-then-rename writer."""

from pathlib import Path

import numpy as np
import pytest

from magvit.data.shards import ShardSink, prepare_output_dir
from magvit.errors import MagvitError


def sample(i: int) -> dict:
    return {"__key__": f"{i:04d}", "npy": np.full((2, 4, 4, 3), i, np.uint8), "cls": i % 3, "json": {"i": i}}


def test_shards_split_by_count_and_are_reproducible(tmp_path: Path) -> None:
    for run in ("a", "b"):
        with ShardSink(tmp_path / run, shard_size=4) as sink:
            for i in range(10):
                sink.write(sample(i))
        assert [(s.name, s.num_clips) for s in sink.shards] == [
            ("shard-000000.tar", 4), ("shard-000001.tar", 4), ("shard-000002.tar", 2)
        ]
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_failure_removes_the_partial_shard_and_keeps_complete_ones(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        with ShardSink(tmp_path, shard_size=4) as sink:
            for i in range(6):
                sink.write(sample(i))
            raise RuntimeError("disk on fire")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]


def test_in_progress_shard_is_hidden_under_a_partial_name(tmp_path: Path) -> None:
    with ShardSink(tmp_path, shard_size=4) as sink:
        sink.write(sample(0))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]


def test_empty_sink_writes_nothing(tmp_path: Path) -> None:
    with ShardSink(tmp_path, shard_size=4):
        pass
    assert list(tmp_path.iterdir()) == []


def test_prepare_output_dir(tmp_path: Path) -> None:
    (tmp_path / "shard-000000.tar").write_bytes(b"x")
    (tmp_path / "shard-000001.tar.partial").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(MagvitError, match="already holds a dataset"):
        prepare_output_dir(tmp_path, overwrite=False)
    prepare_output_dir(tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(MagvitError, match="not a folder"):
        prepare_output_dir(tmp_path / "file", overwrite=True)
