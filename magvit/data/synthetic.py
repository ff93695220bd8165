"""Synthetic labelled videos: a built-in dataset that needs no download (``magvit data synthetic``).

Every clip shows one *class object* moving over a dark background, plus ``distractors`` smaller grey
objects drawn in front of it (they occlude it when they cross). Everything the future depends on is
visible in the first frame, so frame prediction from one frame and interpolation are well posed:

* the class object's **shape and colour are the class** (shape ``SHAPES[c % 6]``, hue ``c / num_classes``);
* its **velocity is a function of the class**: direction ``2 pi (c + 1/2) / num_classes``, speed
  ``(0.75, 1.25, 1.75)[c % 3] * size / 32`` pixels per frame;
* a distractor's velocity is a function of its shape (three kinds, :data:`DISTRACTOR_SHAPES`);
* objects move at constant velocity and bounce elastically off the frame borders (a triangle wave in
  each coordinate, computed in closed form), and the class object (radius ``0.17 size``) is larger than a
  distractor (``0.10 size``), so it is never hidden entirely.

So a model that recognises the object in frame 0 knows where it will be in every later frame.

Randomness (class, start positions, distractor kinds) comes from one numpy ``PCG64`` stream per split,
seeded with ``SeedSequence([seed, split_index])``; rendering is elementwise float32 arithmetic. The
output is therefore bit-for-bit reproducible from ``seed`` and the held-out split never shares a stream
with the training split. Classes are balanced (each split holds ``n // num_classes`` or one more clip of
every class).

:func:`write_synthetic` writes ``out/train/`` and ``out/val/``, each a complete dataset in the shard
format of :mod:`magvit.data.shard_format` (``meta.json`` included), readable with
:func:`magvit.data.make_loader` / :func:`magvit.data.make_eval_loader`.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np

from magvit.data.paths import local_path
from magvit.data.shard_format import (
    CLIP_EXT,
    INFO_EXT,
    LABEL_EXT,
    DatasetMeta,
    ShardInfo,
    sample_key,
    write_meta,
)
from magvit.data.shards import ShardSink, prepare_output_dir
from magvit.data.video_io import write_video
from magvit.errors import InputError, MagvitError

__all__ = [
    "DISTRACTOR_SHAPES",
    "SHAPES",
    "SPLITS",
    "Scenes",
    "SplitReport",
    "SyntheticReport",
    "SyntheticSpec",
    "VideoFolderReport",
    "render",
    "sample_scenes",
    "synthetic_clips",
    "trajectory",
    "write_synthetic",
    "write_synthetic_videos",
]

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "diamond", "cross", "ring")
DISTRACTOR_SHAPES: tuple[str, ...] = ("square", "disc", "diamond")
#: split name -> index mixed into the seed
SPLITS: dict[str, int] = {"train": 0, "val": 1}

_BACKGROUND = 0.08
_DISTRACTOR_GREY = 0.85
_CLASS_RADIUS = 0.17
_DISTRACTOR_RADIUS = 0.10
_CHUNK = 128  # clips rendered at once: bounds memory at ~ 128 * T * H * W * 3 float32


# -- signed distance fields (pixels; negative inside), radius r is the circumradius ----------------


def _sd_disc(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    return np.sqrt(dx * dx + dy * dy) - r


def _sd_square(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    return np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * r


def _sd_triangle(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    # Equilateral, apex up (image y grows downwards); edge normals at 90, 210 and 330 degrees.
    c = np.float32(math.sqrt(3) / 2)
    edges = np.maximum(dy, np.maximum(-c * dx - 0.5 * dy, c * dx - 0.5 * dy))
    return edges - 0.5 * r


def _sd_diamond(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    return (np.abs(dx) + np.abs(dy) - r) * np.float32(1 / math.sqrt(2))


def _sd_cross(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    return np.minimum(np.maximum(ax - 0.3 * r, ay - r), np.maximum(ay - 0.3 * r, ax - r))


def _sd_ring(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    return np.abs(np.sqrt(dx * dx + dy * dy) - 0.68 * r) - 0.32 * r


_SDF: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "disc": _sd_disc,
    "square": _sd_square,
    "triangle": _sd_triangle,
    "diamond": _sd_diamond,
    "cross": _sd_cross,
    "ring": _sd_ring,
}


# -- the generator's rules ------------------------------------------------------------------------


@attrs.frozen
class SyntheticSpec:
    """The deterministic rules of the synthetic world (everything except the per-clip random draws)."""

    frames: int = 16
    size: int = 32
    num_classes: int = 8
    distractors: int = 1

    def __attrs_post_init__(self) -> None:
        if self.frames < 1 or self.size < 8 or self.num_classes < 1 or self.distractors < 0:
            raise InputError(
                "synthetic data needs frames >= 1, size >= 8 pixels, num_classes >= 1 and distractors >= 0, "
                f"got frames={self.frames}, size={self.size}, num_classes={self.num_classes}, "
                f"distractors={self.distractors}"
            )

    @property
    def radius(self) -> float:
        return _CLASS_RADIUS * self.size

    @property
    def distractor_radius(self) -> float:
        return _DISTRACTOR_RADIUS * self.size

    def class_shape(self, label: int) -> str:
        return SHAPES[label % len(SHAPES)]

    def class_colour(self, label: int) -> np.ndarray:
        """RGB in [0, 1], float32."""
        return np.asarray(colorsys.hsv_to_rgb(label / self.num_classes, 0.85, 0.95), dtype=np.float32)

    def class_velocity(self, label: int) -> np.ndarray:
        """``(vx, vy)`` in pixels per frame, float32."""
        angle = 2 * math.pi * (label + 0.5) / self.num_classes
        speed = (0.75, 1.25, 1.75)[label % 3] * self.size / 32
        return np.asarray([speed * math.cos(angle), speed * math.sin(angle)], dtype=np.float32)

    def distractor_velocity(self, kind: int) -> np.ndarray:
        angle = 2 * math.pi * (kind / len(DISTRACTOR_SHAPES)) + 0.4
        speed = 1.5 * self.size / 32
        return np.asarray([speed * math.cos(angle), speed * math.sin(angle)], dtype=np.float32)

    def class_names(self) -> tuple[str, ...]:
        return tuple(f"{self.class_shape(c)}-{round(360 * c / self.num_classes):03d}" for c in range(self.num_classes))


@attrs.frozen
class Scenes:
    """The random draws of ``N`` clips: labels, class-object start centres ``(x, y)``, distractors."""

    labels: np.ndarray  # int64 [N]
    start: np.ndarray  # float32 [N, 2]
    distractor_kind: np.ndarray  # int64 [N, D]
    distractor_start: np.ndarray  # float32 [N, D, 2]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: slice) -> Scenes:
        return Scenes(self.labels[index], self.start[index], self.distractor_kind[index], self.distractor_start[index])


def sample_scenes(spec: SyntheticSpec, num_clips: int, rng: np.random.Generator) -> Scenes:
    """Draw ``num_clips`` scenes: balanced shuffled labels and uniform start positions inside the frame."""
    if num_clips < 1:
        raise InputError(f"num_clips must be >= 1, got {num_clips}")
    labels = rng.permutation(np.arange(num_clips, dtype=np.int64) % spec.num_classes)
    r, rd = spec.radius, spec.distractor_radius
    start = rng.uniform(r, spec.size - r, size=(num_clips, 2)).astype(np.float32)
    kinds = rng.integers(0, len(DISTRACTOR_SHAPES), size=(num_clips, spec.distractors), dtype=np.int64)
    dstart = rng.uniform(rd, spec.size - rd, size=(num_clips, spec.distractors, 2)).astype(np.float32)
    return Scenes(labels, start, kinds, dstart)


def trajectory(start: np.ndarray, velocity: np.ndarray, radius: float, size: int, frames: int) -> np.ndarray:
    """Centres ``[..., T, 2]`` of objects moving at ``velocity`` from ``start`` and bouncing off the borders.

    The centre stays in ``[radius, size - radius]``; reflection is the closed-form triangle wave
    ``lo + tri(p - lo)`` with period ``2 * (hi - lo)``, so no time stepping is needed.
    """
    t = np.arange(frames, dtype=np.float32)[:, None]
    lo = np.float32(radius)
    span = np.float32(size - 2 * radius)
    free = start[..., None, :] + velocity[..., None, :] * t - lo
    folded = np.mod(free, 2 * span)
    return lo + np.where(folded <= span, folded, 2 * span - folded)


def _coverage(shapes: list[str], kinds: np.ndarray, centres: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Anti-aliased coverage ``[n, T, H, W]`` in [0, 1] of objects of shape ``shapes[kinds[i]]``."""
    grid = np.arange(size, dtype=np.float32) + np.float32(0.5)  # pixel centres
    dx = grid[None, None, None, :] - centres[..., 0, None, None]
    dy = grid[None, None, :, None] - centres[..., 1, None, None]
    cover = np.empty(dx.shape[:2] + (size, size), dtype=np.float32)
    for kind in np.unique(kinds):
        rows = kinds == kind
        sd = _SDF[shapes[kind]](dx[rows], dy[rows], np.float32(radius))
        cover[rows] = np.clip(np.float32(0.5) - sd, 0.0, 1.0)
    return cover


def render(spec: SyntheticSpec, scenes: Scenes) -> np.ndarray:
    """Render scenes to uint8 clips ``[N, T, H, W, 3]``."""
    out = np.empty((len(scenes), spec.frames, spec.size, spec.size, 3), dtype=np.uint8)
    velocity = np.stack([spec.class_velocity(c) for c in range(spec.num_classes)])
    colour = np.stack([spec.class_colour(c) for c in range(spec.num_classes)])
    dvelocity = np.stack([spec.distractor_velocity(k) for k in range(len(DISTRACTOR_SHAPES))])
    class_shapes = [spec.class_shape(c) for c in range(spec.num_classes)]
    for begin in range(0, len(scenes), _CHUNK):
        part = scenes.subset(slice(begin, begin + _CHUNK))
        centres = trajectory(part.start, velocity[part.labels], spec.radius, spec.size, spec.frames)
        alpha = _coverage(class_shapes, part.labels, centres, spec.radius, spec.size)[..., None]
        tint = colour[part.labels][:, None, None, None, :]
        image = _BACKGROUND + (tint - np.float32(_BACKGROUND)) * alpha
        for d in range(spec.distractors):
            kinds = part.distractor_kind[:, d]
            dcentres = trajectory(part.distractor_start[:, d], dvelocity[kinds], spec.distractor_radius,
                                  spec.size, spec.frames)
            dalpha = _coverage(list(DISTRACTOR_SHAPES), kinds, dcentres, spec.distractor_radius, spec.size)
            image += (np.float32(_DISTRACTOR_GREY) - image) * dalpha[..., None]
        out[begin : begin + len(part)] = np.rint(np.clip(image, 0.0, 1.0) * 255)
    return out


def _rng(seed: int, split: str) -> np.random.Generator:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLITS[split]])))


def synthetic_clips(
    num_clips: int,
    *,
    frames: int = 16,
    size: int = 32,
    num_classes: int = 8,
    distractors: int = 1,
    seed: int = 0,
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """Generate clips in memory: uint8 ``[N, T, H, W, 3]`` and int64 labels ``[N]``.

    The same arguments always give identical arrays; ``write_synthetic`` writes exactly these clips.
    """
    spec = SyntheticSpec(frames=frames, size=size, num_classes=num_classes, distractors=distractors)
    scenes = sample_scenes(spec, num_clips, _rng(seed, split))
    return render(spec, scenes), scenes.labels


@attrs.frozen
class SplitReport:
    """One written split."""

    name: str
    path: str
    num_clips: int
    shards: tuple[ShardInfo, ...]


@attrs.frozen
class SyntheticReport:
    """The outcome of :func:`write_synthetic`."""

    out: str
    splits: tuple[SplitReport, ...]
    class_names: tuple[str, ...]
    clip_shape: tuple[int, int, int, int]
    seed: int

    def __str__(self) -> str:
        lines = [f"synthetic dataset in {self.out} (seed {self.seed}, clips {self.clip_shape} uint8 T,H,W,C)"]
        lines += [f"  {s.name}: {s.num_clips} clips in {len(s.shards)} shards ({s.path})" for s in self.splits]
        lines.append(f"  {len(self.class_names)} classes: {', '.join(self.class_names)}")
        return "\n".join(lines)


def _write_split(out: Path, spec: SyntheticSpec, split: str, num_clips: int, seed: int, shard_size: int) -> SplitReport:
    clips, labels = synthetic_clips(
        num_clips, frames=spec.frames, size=spec.size, num_classes=spec.num_classes,
        distractors=spec.distractors, seed=seed, split=split,
    )
    with ShardSink(out, shard_size=shard_size) as sink:
        for i, (clip, label) in enumerate(zip(clips, labels.tolist(), strict=True)):
            info = {"source": f"synthetic:{split}:seed={seed}", "clip": i, "start": 0}
            sink.write({"__key__": sample_key(i, 0), CLIP_EXT: clip, LABEL_EXT: label, INFO_EXT: info})
    names = spec.class_names()
    counts = Counter(labels.tolist())
    settings = {
        **attrs.asdict(spec),
        "seed": seed,
        "split": split,
        "shard_size": shard_size,
        "class_velocity": [spec.class_velocity(c).tolist() for c in range(spec.num_classes)],
    }
    meta = DatasetMeta(
        class_names=names,
        clip_shape=(spec.frames, spec.size, spec.size, 3),
        shards=sink.shards,
        clips_per_class={names[c]: counts[c] for c in range(spec.num_classes)},
        labelled=True,
        settings=settings,
        created_by="magvit.data.write_synthetic",
    )
    write_meta(out, meta)
    return SplitReport(split, str(out), num_clips, meta.shards)


def write_synthetic(
    out: str | os.PathLike[str],
    *,
    num_clips: int = 2048,
    num_val_clips: int = 256,
    frames: int = 16,
    size: int = 32,
    num_classes: int = 8,
    distractors: int = 1,
    seed: int = 0,
    shard_size: int = 1000,
    overwrite: bool = False,
) -> SyntheticReport:
    """Write the synthetic dataset: ``out/train/`` (``num_clips``) and ``out/val/`` (``num_val_clips``).

    Each split folder holds shards and a ``meta.json``; see the module docstring for what the clips show.
    The same arguments give byte-identical files.

    Raises:
        MagvitError: a split folder already holds a dataset and ``overwrite`` is False.
        InputError: non-positive counts or sizes.
    """
    spec = SyntheticSpec(frames=frames, size=size, num_classes=num_classes, distractors=distractors)
    if num_clips < 1 or num_val_clips < 1:
        raise InputError(f"num_clips and num_val_clips must be >= 1, got {num_clips} and {num_val_clips}")
    root = Path(out)
    dirs = {split: prepare_output_dir(root / split, overwrite=overwrite) for split in SPLITS}
    reports = (
        _write_split(dirs["train"], spec, "train", num_clips, seed, shard_size),
        _write_split(dirs["val"], spec, "val", num_val_clips, seed, shard_size),
    )
    return SyntheticReport(str(root), reports, spec.class_names(), (frames, size, size, 3), seed)


@attrs.frozen
class VideoFolderReport:
    """The outcome of :func:`write_synthetic_videos`."""

    out: str
    num_clips: int
    class_names: tuple[str, ...]
    suffix: str

    def __str__(self) -> str:
        return (f"{self.num_clips} synthetic clips as {self.suffix} files in {self.out}, one sub-folder per class "
                f"({', '.join(self.class_names)}): `magvit data shards --src {self.out}` ingests them")


VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".gif")


def write_synthetic_videos(
    out: str | os.PathLike[str],
    *,
    num_clips: int = 64,
    frames: int = 16,
    size: int = 32,
    num_classes: int = 8,
    distractors: int = 1,
    seed: int = 0,
    suffix: str = ".mp4",
    overwrite: bool = False,
) -> VideoFolderReport:
    """Write synthetic clips as video files, ``out/<class name>/<index>.mp4``: the layout of a folder of
    one's own videos that :func:`magvit.data.write_shards` ingests (class = sub-folder name).

    The clips are those of the training split of :func:`write_synthetic` with the same arguments; H.264
    is lossy, so frames read back differ slightly from the shards' uint8 clips.

    Raises:
        MagvitError: ``out`` already holds files and ``overwrite`` is False.
        InputError: a non-positive count or an unknown suffix.
    """
    if num_clips < 1:
        raise InputError(f"num_clips must be >= 1, got {num_clips}")
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"suffix must be one of {', '.join(VIDEO_SUFFIXES)}, got {suffix!r}")
    root = local_path(out, "output folder", use="writes videos to")
    if root.exists() and not root.is_dir():
        raise MagvitError(f"output {root} exists and is not a folder; choose a folder path")
    spec = SyntheticSpec(frames=frames, size=size, num_classes=num_classes, distractors=distractors)
    names = spec.class_names()
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise MagvitError(f"{root} is not empty; choose an empty folder or pass --overwrite to replace the "
                              "synthetic videos in it")
        for name in names:  # only files this function writes
            for old in (root / name).glob("[0-9][0-9][0-9][0-9][0-9].*"):
                old.unlink()
    clips, labels = synthetic_clips(num_clips, frames=frames, size=size, num_classes=num_classes,
                                    distractors=distractors, seed=seed, split="train")
    for i, (clip, label) in enumerate(zip(clips, labels.tolist(), strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"{i:05d}{suffix}", clip)
    return VideoFolderReport(str(root), num_clips, names, suffix)
