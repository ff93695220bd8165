"""The synthetic moving-shapes data: reproducible, class visible, motion predictable from frame 0."""

import colorsys
import hashlib
from pathlib import Path

import numpy as np
import pytest

from magvit.data.reader import make_eval_loader
from magvit.data.shard_format import read_meta
from magvit.data.synthetic import Scenes, SyntheticSpec, render, synthetic_clips, trajectory, write_synthetic
from magvit.errors import InputError


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
