"""Looking at a clip dataset: counts, classes and clip shape (``magvit data inspect``), and a sample grid.

:func:`inspect_shards` reads ``meta.json`` and, with ``verify=True`` (default), also reads every sample
through the evaluation loader, so the counts it reports are the ones training will see, and corrupt
samples are listed.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import attrs
import torch

from magvit.data.grid import save_clip_grid
from magvit.data.reader import SkippedSample, make_eval_loader
from magvit.data.shard_format import list_shard_files, read_meta

__all__ = ["ShardReport", "inspect_shards", "write_sample_grid"]


@attrs.frozen
class ShardReport:
    """What a dataset folder holds.

    Attributes:
        path: the dataset folder.
        num_shards: shards listed in meta.json.
        num_clips: clips according to meta.json.
        clip_shape: ``(T, H, W, 3)``.
        class_names: class ``i`` is ``class_names[i]``.
        clips_per_class: according to meta.json.
        labelled: False for a flat folder (every label 0).
        num_bytes: total size of the shard files.
        skipped_inputs: inputs skipped when the dataset was written (from meta.json).
        verified: whether every sample was read back.
        read_clips: clips read back (``None`` unless verified).
        read_per_class: clips read back per class name (empty unless verified).
        corrupt: samples that failed to read (empty unless verified).
        created_by: the writer; settings: its arguments.
        store: ``frames`` (a sample is a clip) or ``video`` (a sample is a stored video, cut into one clip of
            ``clip_shape`` per read).
    """

    path: str
    num_shards: int
    num_clips: int
    clip_shape: tuple[int, int, int, int]
    class_names: tuple[str, ...]
    clips_per_class: dict[str, int]
    labelled: bool
    num_bytes: int
    skipped_inputs: int
    verified: bool
    read_clips: int | None
    read_per_class: dict[str, int]
    corrupt: tuple[SkippedSample, ...]
    created_by: str
    settings: dict[str, object]
    store: str = "frames"

    @property
    def consistent(self) -> bool:
        """True when verified and what was read matches meta.json exactly."""
        return self.verified and self.read_clips == self.num_clips and self.read_per_class == self.clips_per_class

    def __str__(self) -> str:
        t, h, w, c = self.clip_shape
        lines = [
            f"{self.path}: {self.num_clips} clips of {t} frames {h}x{w}x{c} uint8 in {self.num_shards} shards "
            f"({self.num_bytes / 1e6:.1f} MB), written by {self.created_by}"
            + ("" if self.store == "frames" else "; stored as H.264 videos, one clip cut from each per epoch"),
            f"{len(self.class_names)} classes" + ("" if self.labelled else " (unlabelled: every label is 0)"),
        ]
        width = max(len(n) for n in self.class_names)
        for name in self.class_names:
            read = f"  read {self.read_per_class.get(name, 0)}" if self.verified else ""
            lines.append(f"  {name:<{width}}  {self.clips_per_class.get(name, 0)}{read}")
        if self.skipped_inputs:
            lines.append(f"{self.skipped_inputs} inputs were skipped when writing (see meta.json)")
        if self.verified:
            state = "matches meta.json" if self.consistent else "DOES NOT match meta.json"
            lines.append(f"verified: read {self.read_clips} clips, {len(self.corrupt)} corrupt; {state}")
            lines += [f"  corrupt {s.shard}{'#' + s.key if s.key else ''}: {s.reason}" for s in self.corrupt]
        return "\n".join(lines)


def inspect_shards(path: str | os.PathLike[str], *, verify: bool = True, batch_size: int = 64) -> ShardReport:
    """Describe the dataset in ``path`` (a folder with meta.json); ``verify`` reads every sample back.

    Raises:
        MagvitError: ``path`` is not a dataset folder.
    """
    folder = Path(path)
    meta = read_meta(folder)
    listed = {s.name for s in meta.shards}
    num_bytes = sum(f.stat().st_size for f in list_shard_files(folder) if f.name in listed)
    read_clips: int | None = None
    per_class: dict[str, int] = {}
    corrupt: tuple[SkippedSample, ...] = ()
    if verify:
        loader = make_eval_loader(folder, batch_size)
        counts: Counter[int] = Counter()
        for batch in loader:
            counts.update(batch.label.tolist())
        read_clips = loader.report.samples
        per_class = {name: counts[i] for i, name in enumerate(meta.class_names)}
        corrupt = loader.report.skipped
    return ShardReport(
        path=str(folder),
        num_shards=len(meta.shards),
        num_clips=meta.num_clips,
        clip_shape=meta.clip_shape,
        class_names=meta.class_names,
        clips_per_class=meta.clips_per_class,
        labelled=meta.labelled,
        num_bytes=num_bytes,
        skipped_inputs=len(meta.skipped),
        verified=verify,
        read_clips=read_clips,
        read_per_class=per_class,
        corrupt=corrupt,
        created_by=meta.created_by,
        settings=meta.settings,
        store=meta.store,
    )


def write_sample_grid(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, num_clips: int = 8, num_frames: int = 8
) -> Path:
    """Write a PNG with ``num_clips`` clips of the dataset (rows) at ``num_frames`` frames (columns).

    Clips are taken in the dataset's fixed order, one per class in turn, so every class is shown when
    ``num_clips >= num_classes``. Deterministic.
    """
    meta = read_meta(path)
    by_class: dict[int, list[torch.Tensor]] = {}
    taken = 0
    for batch in make_eval_loader(path, batch_size=max(num_clips, 16)):
        for video, label in zip(batch.video, batch.label.tolist(), strict=True):
            by_class.setdefault(label, []).append(video)
            taken += 1
        # Stop reading once every class has enough candidates (or the whole set was seen).
        if taken >= num_clips * meta.num_classes:
            break
    order = sorted(by_class)
    chosen: list[torch.Tensor] = []
    depth = 0
    while len(chosen) < num_clips and any(depth < len(by_class[c]) for c in order):
        chosen += [by_class[c][depth] for c in order if depth < len(by_class[c])][: num_clips - len(chosen)]
        depth += 1
    return save_clip_grid(torch.stack(chosen), out, num_frames=num_frames)
