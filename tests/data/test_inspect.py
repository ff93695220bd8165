"""Dataset inspection report and the sample grid PNG."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magvit.data.grid import clip_grid
from magvit.data.inspect import inspect_shards, write_sample_grid
from magvit.data.synthetic import write_synthetic
from magvit.errors import InputError, MagvitError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_clips=12, num_val_clips=4, frames=6, size=8, num_classes=3, shard_size=5)
    return out / "train"


def test_report_counts_and_verification(dataset: Path) -> None:
    report = inspect_shards(dataset)
    assert report.num_shards == 3 and report.num_clips == 12 and report.clip_shape == (6, 8, 8, 3)
    assert report.class_names == ("disc-000", "square-120", "triangle-240")
    assert report.clips_per_class == report.read_per_class == {"disc-000": 4, "square-120": 4, "triangle-240": 4}
    assert report.consistent and report.read_clips == 12 and report.corrupt == ()
    assert report.num_bytes == sum(p.stat().st_size for p in dataset.glob("shard-*.tar"))
    assert "matches meta.json" in str(report)
    quick = inspect_shards(dataset, verify=False)
    assert quick.read_clips is None and not quick.consistent


def test_report_notices_a_missing_shard_sample(dataset: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    (copy / "shard-000002.tar").write_bytes((copy / "shard-000002.tar").read_bytes()[:100])
    with pytest.warns(UserWarning):
        report = inspect_shards(copy)
    assert not report.consistent and report.read_clips == 10 and report.corrupt
    assert "DOES NOT match" in str(report)


def test_sample_grid_png(dataset: Path, tmp_path: Path) -> None:
    path = write_sample_grid(dataset, tmp_path / "grid.png", num_clips=4, num_frames=3)
    image = np.asarray(Image.open(path))
    assert image.shape == (4 * 9 + 1, 3 * 9 + 1, 3)  # 8 px cells + 1 px padding
    assert list(tmp_path.iterdir()) == [path]


def test_clip_grid_layout() -> None:
    video = torch.zeros(2, 3, 5, 4, 4)
    video[1, :, 4] = 1.0  # last frame of the second clip is white
    grid = clip_grid(video, num_frames=2, padding=0)
    assert grid.shape == (3, 8, 8)
    assert grid[:, 4:, 4:].min() == 1.0 and grid[:, :4].max() == 0.0 and grid[:, 4:, :4].max() == 0.0
    with pytest.raises(InputError):
        clip_grid(torch.zeros(3, 5, 4, 4))


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(MagvitError, match="no meta.json"):
        inspect_shards(tmp_path)
