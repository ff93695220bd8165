"""Datasets of stored videos (``magvit data shards --store video``): ingestion, meta.json, the per-epoch clips of
the training reader, the deterministic clips of the evaluation reader, and training from them; and the
``frames`` store, byte for byte as it was."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from magvit.cli import main
from magvit.data import make_eval_loader, make_loader, read_meta, video_to_frames, write_shards
from magvit.data.shard_format import DatasetMeta, ShardInfo, VideoStore
from magvit.data.synthetic import synthetic_clips, write_synthetic_videos
from magvit.data.video_io import write_video
from magvit.data.video_store import clip_start
from magvit.errors import MagvitError
from tests.helpers.cli import one_line_error

#: The sources: 4 videos of 40 frames at 64x64 (lossless .mkv, so their frames are exactly these arrays).
NUM, FRAMES, SIZE = 4, 40, 64
#: Mean absolute error bound of the stored videos, in 1/255 (tests/data/test_video_store.py measures it).
TOLERANCE = 2.5
#: 40-frame videos, segments of at most 24 frames: two segments of 20 frames, 5 clip starts each.
MAX_SEGMENT, SEGMENT, STARTS = 24, 20, 5


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    clips, _ = synthetic_clips(NUM, frames=FRAMES, size=SIZE, num_classes=2)
    return clips


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos") / "src"
    write_synthetic_videos(root, num_clips=NUM, frames=FRAMES, size=SIZE, num_classes=2, suffix=".mkv")
    short, _ = synthetic_clips(1, frames=10, size=SIZE, num_classes=2)
    write_video(root / "disc-000" / "short.mkv", short[0])
    return root


@pytest.fixture(scope="module")
def shards(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "video"
    write_shards(videos, out, frames=16, size=SIZE, store="video", max_segment_frames=MAX_SEGMENT, shard_size=3)
    return out


def infos(folder: Path) -> dict[str, dict]:
    """``key -> the sample's .json`` over every shard of ``folder``."""
    out = {}
    for shard in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if ext == "json":
                    out[key] = json.loads(tar.extractfile(member).read())
    return out


def segment_of(info: dict, source: np.ndarray) -> np.ndarray:
    index = int(Path(info["source"]).stem)  # write_synthetic_videos names clip i "<class>/<i:05d>.mkv"
    return source[index][info["start"] : info["start"] + info["frames"]]


def clips_by_key(loader) -> dict[str, np.ndarray]:
    """One epoch of ``loader``: ``key -> uint8 clip [T, H, W, 3]``."""
    return {key: video_to_frames(video).numpy() for batch in loader for key, video in zip(batch.keys, batch.video)}


def start_in(clip: np.ndarray, segment: np.ndarray) -> int:
    """The start frame in ``segment`` whose 16 frames ``clip`` is closest to."""
    errors = [np.abs(clip.astype(np.float64) - segment[s : s + 16]).mean() for s in range(len(segment) - 15)]
    return int(np.argmin(errors))


# -- ingestion --------------------------------------------------------------------------------------------


def test_each_video_is_stored_as_segments(shards: Path) -> None:
    meta = read_meta(shards)
    assert meta.store == "video"
    assert meta.video == VideoStore(max_segment_frames=MAX_SEGMENT, stride=1, codec="libx264", pix_fmt="yuv420p",
                                    crf=18, keyframe_interval=32, fps=25)
    assert meta.clip_shape == (16, SIZE, SIZE, 3)
    assert meta.num_clips == 2 * NUM and [s.num_clips for s in meta.shards] == [3, 3, 2]
    assert meta.clips_per_class == {"disc-000": 4, "square-180": 4}
    assert [(s.path, s.reason) for s in meta.skipped] == [
        ("disc-000/short.mkv", "too short: 10 frames, one clip needs 16 (frames=16, stride=1)")]
    with tarfile.open(shards / "shard-000000.tar") as tar:
        assert tar.getnames()[:3] == ["0000000-0000.cls", "0000000-0000.json", "0000000-0000.mp4"]
    found = infos(shards)
    assert found["0000000-0000"] == {"source": "disc-000/00000.mkv", "segment": 0, "start": 0, "frames": SEGMENT}
    assert found["0000003-0001"] == {"source": "square-180/00002.mkv", "segment": 1, "start": SEGMENT,
                                     "frames": SEGMENT}
    assert len(found) == 2 * NUM


def test_video_store_settings_are_checked_before_anything_is_written(videos: Path, tmp_path: Path) -> None:
    with pytest.raises(MagvitError, match="needs an even size; got size=33"):
        write_shards(videos, tmp_path / "a", size=33, store="video")
    with pytest.raises(MagvitError, match="clips_per_video applies to store='frames'"):
        write_shards(videos, tmp_path / "b", size=32, store="video", clips_per_video=1)
    with pytest.raises(MagvitError, match="max_segment_frames must be at least one clip"):
        write_shards(videos, tmp_path / "c", size=32, store="video", max_segment_frames=15)
    with pytest.raises(MagvitError, match="store must be one of frames, video"):
        write_shards(videos, tmp_path / "d", store="npy")
    assert not any(tmp_path.iterdir())


def test_meta_json_without_a_store_is_a_frames_dataset(shards: Path) -> None:
    frames = DatasetMeta(class_names=("a",), clip_shape=(16, 8, 8, 3), shards=(ShardInfo("shard-000000.tar", 1),),
                         clips_per_class={"a": 1})
    body = json.loads(frames.to_json())
    assert "store" not in body and "video" not in body
    assert DatasetMeta.from_json(frames.to_json()) == frames and frames.store == "frames" and frames.video is None
    video = read_meta(shards)
    assert DatasetMeta.from_json(video.to_json()) == video
    body = json.loads(video.to_json())
    del body["video"]
    with pytest.raises(ValueError, match="a video store needs video settings"):
        DatasetMeta.from_json(json.dumps(body))


# -- reading ----------------------------------------------------------------------------------------------


def test_the_eval_loader_gives_the_first_frames_every_time(shards: Path, source: np.ndarray) -> None:
    first = clips_by_key(make_eval_loader(shards, 3))
    again = clips_by_key(make_eval_loader(shards, 5))
    assert list(first) == list(again) == sorted(infos(shards))
    found = infos(shards)
    for key, clip in first.items():
        assert np.array_equal(clip, again[key])
        segment = segment_of(found[key], source)
        assert np.abs(clip.astype(np.float64) - segment[:16]).mean() < TOLERANCE
        assert start_in(clip, segment) == 0


def test_training_clips_start_anew_each_epoch(shards: Path, source: np.ndarray) -> None:
    found = infos(shards)
    loader = make_loader(shards, 3, seed=0)
    epochs = [clips_by_key(loader) for _ in range(3)]
    starts = []
    for epoch, clips in enumerate(epochs):
        assert sorted(clips) == sorted(found)
        for key, clip in clips.items():
            segment = segment_of(found[key], source)
            start = clip_start(0, epoch, key, STARTS)  # the draw of (seed, epoch, key)
            assert start_in(clip, segment) == start
            assert np.abs(clip.astype(np.float64) - segment[start : start + 16]).mean() < TOLERANCE
        starts.append([clip_start(0, epoch, key, STARTS) for key in sorted(found)])
    assert starts[0] != starts[1] and starts[1] != starts[2] and starts[0] != starts[2]

    # the same seed and epoch give the same clips: a fresh loader resumed at epoch 1, or the same one replayed
    resumed = clips_by_key(make_loader(shards, 3, seed=0, start_epoch=1))
    loader.set_epoch(1)
    replayed = clips_by_key(loader)
    for key, clip in epochs[1].items():
        assert np.array_equal(resumed[key], clip) and np.array_equal(replayed[key], clip)
    other_seed = [clip_start(1, 0, key, STARTS) for key in sorted(found)]
    assert other_seed != starts[0]
    seed_one = clips_by_key(make_loader(shards, 3, seed=1))
    assert {k: start_in(c, segment_of(found[k], source)) for k, c in seed_one.items()} == dict(
        zip(sorted(found), other_seed, strict=True))


def test_workers_cut_the_same_clips_as_the_main_process(shards: Path) -> None:
    in_process = clips_by_key(make_loader(shards, 2, seed=7, start_epoch=3))
    in_workers = clips_by_key(make_loader(shards, 2, seed=7, start_epoch=3, num_workers=2))
    assert sorted(in_workers) == sorted(in_process)
    assert all(np.array_equal(in_workers[k], in_process[k]) for k in in_process)


def test_an_undecodable_video_member_is_skipped_and_reported(shards: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "meta.json").write_bytes((shards / "meta.json").read_bytes())
    for shard in sorted(shards.glob("shard-*.tar")):
        with tarfile.open(shard) as src, tarfile.open(copy / shard.name, "w") as dst:
            for member in src.getmembers():
                data = src.extractfile(member).read()
                if member.name == "0000001-0000.mp4":
                    data = data[:40] + b"\x00" * (len(data) - 40)
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
    loader = make_eval_loader(copy, 4)
    with pytest.warns(UserWarning, match="0000001-0000"):
        keys = sorted(clips_by_key(loader))
    assert keys == sorted(set(infos(shards)) - {"0000001-0000"})
    assert [(Path(s.shard).name, s.key) for s in loader.report.skipped] == [("shard-000000.tar", "0000001-0000")]


def test_a_shard_list_without_meta_json_names_the_video_store(shards: Path) -> None:
    loader = make_loader(sorted(str(p) for p in shards.glob("shard-*.tar")), 2)
    with pytest.warns(UserWarning, match="a stored video"), \
            pytest.raises(MagvitError, match=r"a stored video \(\.mp4\)"):
        list(loader)


# -- the command line and training ------------------------------------------------------------------------


def test_a_bad_store_is_a_one_line_error(videos: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "shards", "--src", str(videos), "--out", str(tmp_path / "out"), "--store", "mp4"]) == 2
    one_line_error(capsys, "store", "mp4")
    assert main(["data", "shards", "--src", str(videos), "--out", str(tmp_path / "out"), "--store", "video",
                 "--size", "33"]) == 2
    one_line_error(capsys, "even size")


#: sha256 of each file ``magvit data shards --frames 8 --size 16 --shard_size 3`` writes from
#: ``write_synthetic_videos(num_clips=4, frames=12, size=16, num_classes=2, suffix=".mkv")``, recorded before the
#: store option existed (meta.json with its ``src`` path replaced by ``SRC``).
FRAMES_STORE_SHA256 = {
    "meta.json": "7a80132c5bc2e94694969f05e1f5ae9d58e552dd5511eb949f71d244fff77a99",
    "shard-000000.tar": "b9607a8d35e5c232d583a29ef44355d71169df12ebbb026b0072fd679d68d1ad",
    "shard-000001.tar": "39a519a536a7fee3ed1ecd2f388c51ff0346b61bd27d5b2af255d67cdae81bd3",
}


@pytest.mark.parametrize("flags", [[], ["--store", "frames"]])
def test_the_frames_store_is_byte_identical(tmp_path: Path, flags: list[str]) -> None:
    src = tmp_path / "src"
    write_synthetic_videos(src, num_clips=4, frames=12, size=16, num_classes=2, suffix=".mkv")
    assert main(["data", "shards", "--src", str(src), "--out", str(tmp_path / "out"), "--frames", "8", "--size", "16",
                 "--shard_size", "3", *flags]) == 0
    digests = {}
    for path in sorted((tmp_path / "out").glob("[!.]*")):  # not the writer's lock file
        data = path.read_bytes()
        if path.name == "meta.json":
            data = data.replace(str(src.resolve()).encode(), b"SRC")
        digests[path.name] = hashlib.sha256(data).hexdigest()
    assert digests == FRAMES_STORE_SHA256


def test_fit_the_tiny_tokenizer_from_video_shards(tmp_path: Path) -> None:
    write_synthetic_videos(tmp_path / "mp4", num_clips=4, frames=24, size=32, num_classes=2)
    assert main(["data", "shards", "--src", str(tmp_path / "mp4"), "--out", str(tmp_path / "shards"), "--size", "32",
                 "--store", "video"]) == 0
    out = tmp_path / "run"
    assert main(["fit", "--config", "tiny/tokenizer", "--data.train", str(tmp_path / "shards"),
                 "--trainer.max_steps", "2", "--data.batch_size", "2", "--trainer.out_dir", str(out),
                 "--trainer.progress", "false", "--trainer.tensorboard", "false"]) == 0
    state = torch.load(out / "last.pt", weights_only=True, map_location="cpu")
    assert state["step"] == 2
