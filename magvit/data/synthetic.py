"""Synthetic labelled videos: a built-in dataset that needs no download (``magvit data synthetic``).

Every clip shows one *class object* moving over a dark background, plus ``distractors`` smaller grey
objects drawn in front of it (they occlude it when they cross). By default everything the future
depends on is visible in the first frame, so frame prediction from one frame and interpolation are well
posed:

* the class object's **shape and colour are the class** (shape ``SHAPES[c % 6]``, hue ``c / num_classes``);
* its **velocity is a function of the class**: direction ``2 pi (c + 1/2) / num_classes``, speed
  ``(0.75, 1.25, 1.75)[c % 3] * size / 32`` pixels per frame;
* a distractor's velocity is a function of its shape (three kinds, :data:`DISTRACTOR_SHAPES`);
* objects move at constant velocity and bounce elastically off the frame borders (a triangle wave in
  each coordinate, computed in closed form), and the class object (radius ``0.17 size``) is larger than a
  distractor (``0.10 size``), so it is never hidden entirely.

So a model that recognises the object in frame 0 knows where it will be in every later frame.

The exception is ``turn_probability`` (default 0): with that probability a clip's class object turns
once, at a turn frame ``k`` drawn uniformly from ``1 .. T-1``. Up to and including frame ``k`` it follows
the path above; after it, it moves from its frame-``k`` centre at the class velocity rotated by an angle
drawn uniformly from ``[-pi, pi)`` (same speed), bouncing as before. Frame 0 then no longer determines
the clip, so a frame predictor faces real uncertainty about the future. Distractors never turn.

Randomness (class, start positions, distractor kinds, turns) comes from one numpy ``PCG64`` stream per split,
seeded with ``SeedSequence([seed, split_index])``; rendering is elementwise float32 arithmetic. The
output is therefore bit-for-bit reproducible from ``seed`` and the held-out split never shares a stream
with the training split. Classes are balanced (each split holds ``n // num_classes`` or one more clip of
every class). The turns are drawn after all other draws and only when ``turn_probability > 0``, so with
``turn_probability=0`` the clips are exactly those of a generator without turns.

:func:`write_synthetic` writes ``out/train/`` and ``out/val/``, each a complete dataset in the shard
format of :mod:`magvit.data.shard_format` (``meta.json`` included), readable with
:func:`magvit.data.make_loader` / :func:`magvit.data.make_eval_loader`.
"""

from __future__ import annotations

import colorsys
import contextlib
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
from magvit.data.shards import ShardSink, dataset_lock, prepare_output_dir
from magvit.data.video_io import write_video
from magvit.errors import InputError, MagvitError

__all__ = [
    "DISTRACTOR_SHAPES",
    "NO_TURN",
    "SHAPES",
    "SPLITS",
    "Scenes",
    "SplitReport",
    "SyntheticReport",
    "SyntheticSpec",
    "VideoFolderReport",
    "class_centres",
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
    #: probability that a clip's class object turns once (see the module docstring)
    turn_probability: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.frames < 1 or self.size < 8 or self.num_classes < 1 or self.distractors < 0:
            raise InputError(
                "synthetic data needs frames >= 1, size >= 8 pixels, num_classes >= 1 and distractors >= 0, "
                f"got frames={self.frames}, size={self.size}, num_classes={self.num_classes}, "
                f"distractors={self.distractors}"
            )
        if not 0.0 <= self.turn_probability <= 1.0:  # also rejects NaN
            raise InputError(f"turn_probability must be in [0, 1], got {self.turn_probability}")
        if self.turn_probability > 0 and self.frames < 2:
            raise InputError(f"turn_probability > 0 needs frames >= 2 (a turn frame in 1 .. frames-1), "
                             f"got frames={self.frames}")

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


#: a ``Scenes.turn_frame`` meaning "never turns" in a clip of any length
NO_TURN = np.iinfo(np.int64).max


@attrs.frozen
class Scenes:
    """The random draws of ``N`` clips: labels, class-object start centres ``(x, y)``, distractors, turns.

    A clip's class object turns after frame ``turn_frame`` by ``turn_angle`` radians; a ``turn_frame`` of
    ``frames`` or more (:data:`NO_TURN` by default) means it never turns.
    """

    labels: np.ndarray  # int64 [N]
    start: np.ndarray  # float32 [N, 2]
    distractor_kind: np.ndarray  # int64 [N, D]
    distractor_start: np.ndarray  # float32 [N, D, 2]
    turn_frame: np.ndarray = attrs.field()  # int64 [N]
    turn_angle: np.ndarray = attrs.field()  # float32 [N]

    @turn_frame.default
    def _no_turn_frame(self) -> np.ndarray:
        return np.full(len(self.labels), NO_TURN, dtype=np.int64)

    @turn_angle.default
    def _no_turn_angle(self) -> np.ndarray:
        return np.zeros(len(self.labels), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: slice) -> Scenes:
        return Scenes(self.labels[index], self.start[index], self.distractor_kind[index], self.distractor_start[index],
                      self.turn_frame[index], self.turn_angle[index])


def sample_scenes(spec: SyntheticSpec, num_clips: int, rng: np.random.Generator) -> Scenes:
    """Draw ``num_clips`` scenes: balanced shuffled labels, uniform start positions inside the frame and,
    if ``spec.turn_probability > 0``, the turns (non-turning clips get ``turn_frame = spec.frames``)."""
    if num_clips < 1:
        raise InputError(f"num_clips must be >= 1, got {num_clips}")
    labels = rng.permutation(np.arange(num_clips, dtype=np.int64) % spec.num_classes)
    r, rd = spec.radius, spec.distractor_radius
    start = rng.uniform(r, spec.size - r, size=(num_clips, 2)).astype(np.float32)
    kinds = rng.integers(0, len(DISTRACTOR_SHAPES), size=(num_clips, spec.distractors), dtype=np.int64)
    dstart = rng.uniform(rd, spec.size - rd, size=(num_clips, spec.distractors, 2)).astype(np.float32)
    if spec.turn_probability == 0:  # no draws: the stream, hence the clips, match a world without turns
        return Scenes(labels, start, kinds, dstart)
    turns = rng.random(num_clips) < spec.turn_probability
    frame = rng.integers(1, spec.frames, size=num_clips, dtype=np.int64)  # 1 .. T-1: frame 0 never turns
    angle = rng.uniform(-math.pi, math.pi, size=num_clips).astype(np.float32)
    turn_frame = np.where(turns, frame, np.int64(spec.frames))
    turn_angle = np.where(turns, angle, np.float32(0))
    return Scenes(labels, start, kinds, dstart, turn_frame, turn_angle)


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


def class_centres(spec: SyntheticSpec, scenes: Scenes) -> np.ndarray:
    """Centres ``[N, T, 2]`` (float32 pixels) of the scenes' class objects, turns included.

    A turned clip follows its un-turned path up to and including ``turn_frame``; later frames continue
    from that centre at the class velocity rotated by ``turn_angle`` (the triangle wave of
    :func:`trajectory` is valid from any in-bounds start).
    """
    velocity = np.stack([spec.class_velocity(c) for c in range(spec.num_classes)])[scenes.labels]
    centres = trajectory(scenes.start, velocity, spec.radius, spec.size, spec.frames)
    turned = np.flatnonzero(scenes.turn_frame < spec.frames)
    if turned.size == 0:
        return centres
    k = scenes.turn_frame[turned]
    cos, sin = np.cos(scenes.turn_angle[turned]), np.sin(scenes.turn_angle[turned])
    vx, vy = velocity[turned, 0], velocity[turned, 1]
    rotated = np.stack([cos * vx - sin * vy, sin * vx + cos * vy], axis=-1)
    after = trajectory(centres[turned, k], rotated, spec.radius, spec.size, spec.frames)  # frame k + tau
    t = np.arange(spec.frames)
    since = np.clip(t[None, :] - k[:, None], 0, None)  # [M, T]
    shifted = np.take_along_axis(after, since[..., None], axis=1)
    centres[turned] = np.where((t[None, :] > k[:, None])[..., None], shifted, centres[turned])
    return centres


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
    colour = np.stack([spec.class_colour(c) for c in range(spec.num_classes)])
    dvelocity = np.stack([spec.distractor_velocity(k) for k in range(len(DISTRACTOR_SHAPES))])
    class_shapes = [spec.class_shape(c) for c in range(spec.num_classes)]
    for begin in range(0, len(scenes), _CHUNK):
        part = scenes.subset(slice(begin, begin + _CHUNK))
        centres = class_centres(spec, part)
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
    turn_probability: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate clips in memory: uint8 ``[N, T, H, W, 3]`` and int64 labels ``[N]``.

    The same arguments always give identical arrays; ``write_synthetic`` writes exactly these clips.
    ``turn_probability`` in [0, 1] is the chance that a clip's class object turns once (module docstring).
    """
    spec = SyntheticSpec(frames=frames, size=size, num_classes=num_classes, distractors=distractors,
                         turn_probability=turn_probability)
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
        distractors=spec.distractors, seed=seed, split=split, turn_probability=spec.turn_probability,
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
    turn_probability: float = 0.0,
) -> SyntheticReport:
    """Write the synthetic dataset: ``out/train/`` (``num_clips``) and ``out/val/`` (``num_val_clips``).

    Each split folder holds shards and a ``meta.json``; see the module docstring for what the clips show.
    The same arguments give byte-identical files. ``turn_probability`` in [0, 1] is the chance that a
    clip's class object turns once, so that frame 0 no longer determines the clip; it is recorded in
    each split's ``meta.json`` settings.

    Raises:
        MagvitError: a split folder already holds a dataset and ``overwrite`` is False.
        InputError: non-positive counts or sizes, or ``turn_probability`` outside [0, 1].
    """
    spec = SyntheticSpec(frames=frames, size=size, num_classes=num_classes, distractors=distractors,
                         turn_probability=turn_probability)
    if num_clips < 1 or num_val_clips < 1:
        raise InputError(f"num_clips and num_val_clips must be >= 1, got {num_clips} and {num_val_clips}")
    root = Path(out)
    with contextlib.ExitStack() as held:
        for split in SPLITS:  # both locks before either folder is cleared
            held.enter_context(dataset_lock(root / split))
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
    turn_probability: float = 0.0,
) -> VideoFolderReport:
    """Write synthetic clips as video files, ``out/<class name>/<index>.mp4``: the layout of a folder of
    one's own videos that :func:`magvit.data.write_shards` ingests (class = sub-folder name).

    The clips are those of the training split of :func:`write_synthetic` with the same arguments; H.264
    is lossy, so frames read back differ slightly from the shards' uint8 clips.

    Raises:
        MagvitError: ``out`` already holds files and ``overwrite`` is False.
        InputError: a non-positive count, an unknown suffix or ``turn_probability`` outside [0, 1].
    """
    if num_clips < 1:
        raise InputError(f"num_clips must be >= 1, got {num_clips}")
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"suffix must be one of {', '.join(VIDEO_SUFFIXES)}, got {suffix!r}")
    root = local_path(out, "output folder", use="writes videos to")
    if root.exists() and not root.is_dir():
        raise MagvitError(f"output {root} exists and is not a folder; choose a folder path")
    spec = SyntheticSpec(frames=frames, size=size, num_classes=num_classes, distractors=distractors,
                         turn_probability=turn_probability)
    names = spec.class_names()
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise MagvitError(f"{root} is not empty; choose an empty folder or pass --overwrite to replace the "
                              "synthetic videos in it")
        for name in names:  # only files this function writes
            for old in (root / name).glob("[0-9][0-9][0-9][0-9][0-9].*"):
                old.unlink()
    clips, labels = synthetic_clips(num_clips, frames=frames, size=size, num_classes=num_classes,
                                    distractors=distractors, seed=seed, split="train",
                                    turn_probability=turn_probability)
    for i, (clip, label) in enumerate(zip(clips, labels.tolist(), strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"{i:05d}{suffix}", clip)
    return VideoFolderReport(str(root), num_clips, names, suffix)
