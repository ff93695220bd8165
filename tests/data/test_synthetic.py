"""The synthetic moving-shapes data: reproducible, class visible, motion predictable from frame 0 unless
the class object turns (``turn_probability``)."""

import colorsys
import hashlib
from pathlib import Path

import numpy as np
import pytest

from magvit.cli import main
from magvit.data.reader import make_eval_loader
from magvit.data.shard_format import read_meta
from magvit.data.synthetic import (
    Scenes,
    SyntheticSpec,
    _rng,
    class_centres,
    render,
    sample_scenes,
    synthetic_clips,
    trajectory,
    write_synthetic,
)
from magvit.errors import InputError
from tests.helpers.cli import one_line_error


def test_same_seed_same_arrays_other_seed_or_split_differs() -> None:
    a, la = synthetic_clips(24, frames=8, size=16, seed=3)
    b, lb = synthetic_clips(24, frames=8, size=16, seed=3)
    assert a.dtype == np.uint8 and a.shape == (24, 8, 16, 16, 3) and la.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, synthetic_clips(24, frames=8, size=16, seed=4)[0])
    assert not np.array_equal(a, synthetic_clips(24, frames=8, size=16, seed=3, split="val")[0])


def test_classes_are_balanced() -> None:
    _, labels = synthetic_clips(20, frames=2, size=16, num_classes=8)
    assert np.bincount(labels, minlength=8).tolist() == [3, 3, 3, 3, 2, 2, 2, 2]


def test_class_is_visible_from_the_colour_of_frame_zero() -> None:
    clips, labels = synthetic_clips(96, frames=4, size=32, num_classes=8, distractors=2, seed=1)
    hues = np.arange(8) / 8
    predicted = []
    for clip in clips:
        pixels = clip[0].reshape(-1, 3).astype(np.float32) / 255
        saturation = pixels.max(1) - pixels.min(1)
        h, _, _ = colorsys.rgb_to_hsv(*pixels[saturation.argmax()])
        predicted.append(int(np.argmin(np.abs(((hues - h) + 0.5) % 1 - 0.5))))
    assert predicted == labels.tolist()


def test_future_frames_follow_from_frame_zero() -> None:
    """Recover class and position from frame 0 alone, then re-render all frames: they match the clip."""
    spec = SyntheticSpec(frames=16, size=32, num_classes=8, distractors=0)
    clips, labels = synthetic_clips(40, frames=16, size=32, num_classes=8, distractors=0, seed=2)
    yy, xx = np.mgrid[0:32, 0:32] + 0.5
    starts = []
    for clip in clips:
        ink = clip[0].astype(np.float32).max(-1) - 0.08 * 255  # coverage x (colour - background)
        ink = np.clip(ink, 0, None)
        starts.append([(ink * xx).sum() / ink.sum(), (ink * yy).sum() / ink.sum()])
    # Only shapes symmetric about their centre have their centroid at the centre: exclude the triangle.
    keep = np.array([spec.class_shape(c) != "triangle" for c in labels])
    scenes = Scenes(labels[keep], np.asarray(starts, np.float32)[keep], np.zeros((keep.sum(), 0), np.int64),
                    np.zeros((keep.sum(), 0, 2), np.float32))
    predicted = render(spec, scenes)
    error = np.abs(predicted.astype(np.float32) - clips[keep]).mean()
    assert error < 0.5, error  # grey levels out of 255


def test_trajectory_bounces_off_the_borders() -> None:
    path = trajectory(np.array([[5.0, 16.0]], np.float32), np.array([[-2.0, 0.0]], np.float32), 4.0, 32, 4)
    np.testing.assert_allclose(path[0], [[5, 16], [5, 16], [7, 16], [9, 16]])
    path = trajectory(np.array([[27.0, 16.0]], np.float32), np.array([[3.0, 0.0]], np.float32), 4.0, 32, 3)
    np.testing.assert_allclose(path[0, :, 0], [27, 26, 23])


def test_occluders_cover_the_class_object_sometimes() -> None:
    clear, _ = synthetic_clips(64, frames=16, size=32, distractors=0, seed=5)
    occluded, _ = synthetic_clips(64, frames=16, size=32, distractors=1, seed=5)
    grey = (occluded == 217).all(-1)  # the distractor colour 0.85 * 255
    coloured = (clear.max(-1) - clear.min(-1)) > 100
    assert (grey & coloured).any(axis=(2, 3)).mean() > 0.05  # a distractor over the class object


def test_write_synthetic_splits_and_reproducible_bytes(tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        report = write_synthetic(tmp_path / run, num_clips=30, num_val_clips=10, frames=4, size=16, shard_size=16)
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / run).rglob("*.tar"))])
    assert digests[0] == digests[1] and len(digests[0]) == 3
    assert [(s.name, s.num_clips, len(s.shards)) for s in report.splits] == [("train", 30, 2), ("val", 10, 1)]
    meta = read_meta(tmp_path / "a" / "train")
    assert meta.class_names[:3] == ("disc-000", "square-045", "triangle-090") and meta.clip_shape == (4, 16, 16, 3)
    clips, labels = synthetic_clips(10, frames=4, size=16, split="val")
    batch = next(iter(make_eval_loader(tmp_path / "a" / "val", 10)))
    np.testing.assert_array_equal((batch.video * 255).round().byte().permute(0, 2, 3, 4, 1).numpy(), clips)
    assert batch.label.tolist() == labels.tolist()


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        synthetic_clips(0)
    with pytest.raises(InputError):
        synthetic_clips(4, size=4)
    with pytest.raises(InputError, match="unknown split"):
        synthetic_clips(4, split="test")


# -- turns: the class object may change direction once, so frame 0 no longer fixes the future ---------


def test_without_turns_the_clips_are_those_of_the_generator_without_turns() -> None:
    """turn_probability=0 draws nothing extra: the bytes are those the generator gave before it had turns."""
    clips, labels = synthetic_clips(16, seed=0)
    assert hashlib.sha256(clips.tobytes()).hexdigest() == (
        "149c02d1677c067c0262f486220472a268efb87c3696ef75bf27b4bc3a20c5ef")
    assert hashlib.sha256(labels.tobytes()).hexdigest() == (
        "917b57281f1f5607e7ae76a5789bff67fd1ca62a6db5593045ffbfd06b907149")
    scenes = sample_scenes(SyntheticSpec(), 16, _rng(0, "train"))
    assert (scenes.turn_frame >= 16).all() and not scenes.turn_angle.any()


def _unturned(scenes: Scenes) -> Scenes:
    return Scenes(scenes.labels, scenes.start, scenes.distractor_kind, scenes.distractor_start)


def test_a_turned_object_keeps_its_path_up_to_the_turn_frame_and_leaves_it_after() -> None:
    spec = SyntheticSpec(frames=16, size=32, num_classes=8, distractors=0, turn_probability=1.0)
    scenes = sample_scenes(spec, 200, _rng(0, "train"))
    assert scenes.turn_frame.dtype == np.int64 and scenes.turn_angle.dtype == np.float32
    assert (scenes.turn_frame.min(), scenes.turn_frame.max()) == (1, 15)  # frame 0 never turns
    assert (-np.pi <= scenes.turn_angle).all() and (scenes.turn_angle <= np.pi).all()
    turned, straight = class_centres(spec, scenes), class_centres(spec, _unturned(scenes))
    assert (turned >= spec.radius).all() and (turned <= spec.size - spec.radius).all()
    speed = np.linalg.norm(spec.class_velocity(0))
    assert np.linalg.norm(np.diff(turned[scenes.labels == 0], axis=1), axis=-1).max() <= speed + 1e-4
    for path, line, k in zip(turned, straight, scenes.turn_frame.tolist(), strict=True):
        np.testing.assert_array_equal(path[: k + 1], line[: k + 1])
        assert (path[k + 1 :] != line[k + 1 :]).any(-1).all()


def test_turn_follows_the_rotated_velocity_from_the_turn_frame() -> None:
    spec = SyntheticSpec(frames=6, size=32, num_classes=4, distractors=0, turn_probability=1.0)
    start = np.array([[16.0, 16.0]], np.float32)
    scenes = Scenes(np.array([1]), start, np.zeros((1, 0), np.int64), np.zeros((1, 0, 2), np.float32),
                    np.array([2]), np.array([np.pi / 2], np.float32))
    v = spec.class_velocity(1)
    expected = [start[0] + v * t for t in range(3)]
    expected += [expected[2] + np.array([-v[1], v[0]]) * t for t in range(1, 4)]
    np.testing.assert_allclose(class_centres(spec, scenes)[0], expected, atol=1e-5)


def test_turns_change_the_rendered_frames_only_after_the_turn_frame() -> None:
    straight, labels = synthetic_clips(64, frames=16, size=32, distractors=1, seed=4)
    turned, turned_labels = synthetic_clips(64, frames=16, size=32, distractors=1, seed=4, turn_probability=1.0)
    np.testing.assert_array_equal(labels, turned_labels)
    frames = sample_scenes(SyntheticSpec(turn_probability=1.0), 64, _rng(4, "train")).turn_frame.tolist()
    for a, b, k in zip(straight, turned, frames, strict=True):
        np.testing.assert_array_equal(a[: k + 1], b[: k + 1])
        assert np.array_equal(a[k + 1 :], b[k + 1 :]) == (k == 15)  # a turn at the last frame shows nothing
    assert frames.count(15) == 6


def test_the_fraction_of_turned_clips_is_the_turn_probability() -> None:
    scenes = sample_scenes(SyntheticSpec(turn_probability=0.3), 2000, _rng(0, "train"))
    count = int((scenes.turn_frame < 16).sum())
    assert count == 576 and abs(count / 2000 - 0.3) < 0.05
    assert (scenes.turn_frame[scenes.turn_frame >= 16] == 16).all()
    assert not scenes.turn_angle[scenes.turn_frame >= 16].any()


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_turn_probability_outside_zero_one_is_refused(p: float) -> None:
    with pytest.raises(InputError, match=r"turn_probability must be in \[0, 1\]"):
        SyntheticSpec(turn_probability=p)
    with pytest.raises(InputError, match=r"turn_probability must be in \[0, 1\]"):
        synthetic_clips(4, turn_probability=p)
    with pytest.raises(InputError, match="frames >= 2"):
        synthetic_clips(4, frames=1, turn_probability=0.5)


def test_cli_turn_probability_is_recorded_in_the_meta_settings(tmp_path: Path, capsys) -> None:
    args = ["data", "synthetic", "--out", str(tmp_path / "d"), "--num_clips", "8", "--num_val_clips", "2",
            "--frames", "4", "--size", "16"]
    assert main([*args, "--turn_probability", "0.25"]) == 0
    for split in ("train", "val"):
        assert read_meta(tmp_path / "d" / split).settings["turn_probability"] == 0.25
    clips, _ = synthetic_clips(2, frames=4, size=16, split="val", turn_probability=0.25)
    batch = next(iter(make_eval_loader(tmp_path / "d" / "val", 2)))
    np.testing.assert_array_equal((batch.video * 255).round().byte().permute(0, 2, 3, 4, 1).numpy(), clips)
    capsys.readouterr()
    assert main([*args, "--overwrite", "--turn_probability", "1.5"]) == 2
    assert "turn_probability must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_a_second_writer_is_refused_before_it_clears_either_split(tmp_path: Path, capsys) -> None:
    from magvit.locking import FolderLock

    write_synthetic(tmp_path / "d", num_clips=4, num_val_clips=2, frames=4, size=16)
    before = {p: p.read_bytes() for p in sorted((tmp_path / "d").rglob("*")) if p.is_file() and p.name[0] != "."}
    # another writer holds the val split: the train split (locked first) must not be cleared either
    with FolderLock(tmp_path / "d" / "val", "dataset folder"):
        assert main(["data", "synthetic", "--out", str(tmp_path / "d"), "--num_clips", "4", "--num_val_clips", "2",
                     "--frames", "4", "--size", "16", "--overwrite"]) == 2
        one_line_error(capsys, f"dataset folder {tmp_path / 'd' / 'val'} is in use by another magvit process")
    assert {p: p.read_bytes() for p in sorted((tmp_path / "d").rglob("*")) if p.is_file() and p.name[0] != "."} \
        == before
    write_synthetic(tmp_path / "d", num_clips=4, num_val_clips=2, frames=4, size=16, overwrite=True)  # released
