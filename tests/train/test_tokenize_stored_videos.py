"""The token cache refuses a dataset of stored videos: its clips change every epoch, token shards fix one."""

from pathlib import Path

import pytest

from magvit.data import write_shards
from magvit.data.synthetic import write_synthetic_videos
from magvit.errors import MagvitError
from magvit.train.tokenize import tokenize_shards


def test_tokenize_refuses_stored_videos(tmp_path: Path) -> None:
    write_synthetic_videos(tmp_path / "mp4", num_clips=2, frames=16, size=16, num_classes=1)
    write_shards(tmp_path / "mp4", tmp_path / "shards", frames=16, size=16, store="video")
    with pytest.raises(MagvitError, match=r"holds stored videos \(store: video\).*--store frames"):
        tokenize_shards(tmp_path / "no-checkpoint.pt", tmp_path / "shards", tmp_path / "tokens")
    assert not (tmp_path / "tokens").exists()
