"""Ingesting a folder of real video files (written here with PyAV) into shards, and reading them back."""

import json
from pathlib import Path

import numpy as np
import pytest

from magvit.data.ingest import find_videos, write_shards
from magvit.data.reader import make_eval_loader
from magvit.data.shard_format import read_meta
from magvit.data.video_io import write_video
from magvit.errors import MagvitError

FRAMES = 20  # each video: 20 frames -> two non-overlapping 8-frame clips (starts 0 and 8)


def coded_frames(video_id: int, t: int = FRAMES, h: int = 24, w: int = 32) -> np.ndarray:
    """Flat-colour frames whose colour encodes (video, frame): clips can be matched to their source frames."""
    frames = np.empty((t, h, w, 3), np.uint8)
    for k in range(t):
        frames[k] = (40 + 10 * k, 20 + 30 * video_id, 200 - 8 * k)
    return frames


#: (relative path, video id) of the readable videos; ids make every source distinguishable.
GOOD = [
    ("walk/a.mp4", 0),
    ("walk/sub/b.avi", 1),
    ("run/c.webm", 2),
    ("run/d.mkv", 3),
    ("run/e.gif", 4),
]


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "videos"
    for rel, vid in GOOD:
        write_video(src / rel, coded_frames(vid))
    write_video(src / "run" / "short.mp4", coded_frames(5, t=5))
    (src / "walk" / "garbage.mkv").write_bytes(b"\x00\x01garbage" * 500)
    whole = (src / "walk" / "a.mp4").read_bytes()
    (src / "walk" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (src / "walk" / "notes.txt").write_text("not a video")
    write_video(src / "loose.mp4", coded_frames(6))
    return src


def test_round_trip_shapes_labels_and_pixels(video_folder: Path, tmp_path: Path) -> None:
    report = write_shards(video_folder, tmp_path / "out", frames=8, size=16, shard_size=3)
    assert report.class_names == ("run", "walk")  # sorted: label 0 = run, 1 = walk
    assert report.num_clips == 10 and [s.num_clips for s in report.shards] == [3, 3, 3, 1]
    assert report.clips_per_class == {"run": 6, "walk": 4}

    infos = {}
    batches = list(make_eval_loader(tmp_path / "out", batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    for batch in batches:
        assert batch.video.shape[1:] == (3, 8, 16, 16)
        for key, video, label in zip(batch.keys, batch.video, batch.label.tolist(), strict=True):
            infos[key] = (video, label)
    # Sorted path order: run/c.webm, run/d.mkv, run/e.gif, run/short.mp4 (skipped), walk/a.mp4, walk/garbage.mkv
    # (skipped), walk/sub/b.avi, walk/truncated.mp4 (skipped): video index = position in that order.
    expected = {0: (2, 0), 1: (3, 0), 2: (4, 0), 4: (0, 1), 6: (1, 1)}
    assert sorted(infos) == sorted(f"{i:07d}-{c:04d}" for i in expected for c in (0, 1))
    for index, (vid, label) in expected.items():
        for clip_index, start in ((0, 0), (1, 8)):
            video, got_label = infos[f"{index:07d}-{clip_index:04d}"]
            assert got_label == label
            want = coded_frames(vid)[start : start + 8, :16, :16].astype(np.float32) / 255
            got = video.permute(1, 2, 3, 0).numpy()
            assert np.abs(got - want).max() < 6 / 255, f"video {vid} clip {clip_index}"


def test_bad_files_are_skipped_and_reported(video_folder: Path, tmp_path: Path) -> None:
    report = write_shards(video_folder, tmp_path / "out", frames=8, size=16)
    reasons = {s.path: s.reason for s in report.skipped}
    assert set(reasons) == {"loose.mp4", "run/short.mp4", "walk/garbage.mkv", "walk/truncated.mp4"}
    assert "not inside a class sub-folder" in reasons["loose.mp4"]
    assert reasons["run/short.mp4"].startswith("too short: 5 frames, one clip needs 8")
    assert reasons["walk/garbage.mkv"].startswith("unreadable")
    assert reasons["walk/truncated.mp4"].startswith("unreadable")
    assert report.ignored == ("walk/notes.txt",)
    assert report.num_videos == 9
    text = str(report)
    assert "skipped 4 videos" in text and "walk/garbage.mkv" in text

    meta = read_meta(tmp_path / "out")
    assert {s.path for s in meta.skipped} == set(reasons)
    on_disk = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert on_disk["num_clips"] == 10 and on_disk["settings"]["frames"] == 8
    # the dataset and the (empty) lock file of its writer (magvit.locking)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".magvit.lock", "meta.json", "shard-000000.tar"]


def test_flat_folder_is_one_unlabeled_class(tmp_path: Path) -> None:
    for vid in range(2):
        write_video(tmp_path / "flat" / f"v{vid}.mkv", coded_frames(vid, t=16))
    listing = find_videos(tmp_path / "flat")
    assert not listing.labelled and listing.class_names == ("unlabeled",)
    report = write_shards(tmp_path / "flat", tmp_path / "out", frames=16, size=8, clips_per_video=1)
    assert report.num_clips == 2 and not report.labelled
    assert all(b.label.tolist() == [0, 0] for b in make_eval_loader(tmp_path / "out", 2))


def test_stride_and_clips_per_video(tmp_path: Path) -> None:
    write_video(tmp_path / "src" / "a" / "v.mkv", coded_frames(0))
    write_shards(tmp_path / "src", tmp_path / "out", frames=4, size=8, stride=3, clips_per_video=2)
    batch = next(iter(make_eval_loader(tmp_path / "out", 8)))
    # span 10 in 20 frames: starts 0 and 10; red channel = 40 + 10 * frame
    red = (batch.video[:, 0, :, 0, 0] * 255).round().long().tolist()
    assert red == [[40, 70, 100, 130], [140, 170, 200, 230]]


def test_missing_and_empty_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MagvitError, match="does not exist"):
        write_shards(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(MagvitError, match="no video files"):
        write_shards(tmp_path / "empty", tmp_path / "out")


def test_no_usable_video_is_an_error_listing_reasons(tmp_path: Path) -> None:
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.mp4").write_bytes(b"junk")
    with pytest.raises(MagvitError, match=r"no clip could be cut.*a/x.mp4: unreadable"):
        write_shards(tmp_path / "src", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".magvit.lock"]  # no shard, no meta.json


def test_existing_dataset_needs_overwrite(video_folder: Path, tmp_path: Path) -> None:
    write_shards(video_folder, tmp_path / "out", frames=8, size=8)
    with pytest.raises(MagvitError, match="already holds a dataset"):
        write_shards(video_folder, tmp_path / "out", frames=8, size=8)
    report = write_shards(video_folder, tmp_path / "out", frames=8, size=8, shard_size=4, overwrite=True)
    assert len(list((tmp_path / "out").glob("shard-*.tar"))) == len(report.shards) == 3


def test_a_second_writer_is_refused_before_it_clears_anything(video_folder: Path, tmp_path: Path) -> None:
    from magvit.locking import FolderLock, FolderLockedError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "shard-000000.tar").write_bytes(b"the first writer's shard")
    with FolderLock(tmp_path / "out", "dataset folder"):
        with pytest.raises(FolderLockedError, match=f"dataset folder {tmp_path / 'out'} is in use"):
            write_shards(video_folder, tmp_path / "out", frames=8, size=16, overwrite=True)
    assert (tmp_path / "out" / "shard-000000.tar").read_bytes() == b"the first writer's shard"
