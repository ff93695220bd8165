"""The token cache: a clip dataset pre-tokenised by a frozen tokenizer (token shards), and its reader.

Written by :func:`magvit.train.tokenize.tokenize_shards` (``magvit data tokenize``). A token-shard folder
holds one ``shard-NNNNNN.tar`` per input clip shard (same name, same samples, same order) and a
``meta.json`` (:class:`TokenMeta`). Each sample ``<key>`` (the clip's key) has the members

* ``<key>.tok.npy`` -- ground-truth tokens ``[t, h, w]``, int16 (int32 for codebooks > 32767 codes);
* ``<key>.tok-<task>.npy`` -- rare: that task's ground-truth tokens where they differ from ``tok`` (the
  encoder's batch-size dependent rounding flipped a near tie; :mod:`magvit.train.tokenize`);
* ``<key>.cond-<task>.npy`` / ``<key>.mask-<task>.npy`` -- for each cached task with a visual condition:
  the tokens of its padded condition video (same dtype) and its condition-token mask (bool ``[t, h, w]``);
  cached tasks without a visual condition (cg) store nothing beyond ``tok``;
* ``<key>.cls`` -- the class index;
* ``<key>.npy`` -- the uint8 clip ``[T, H, W, 3]``, only when ``meta.has_video``: tasks whose condition is
  random (``Task.deterministic`` False) cannot be cached and are tokenised on the fly from this clip.
  Storing the clip (rather than reading the video shard alongside) keeps one self-contained stream,
  so shuffling, node/worker splitting and resumption stay those of :mod:`magvit.data.reader`.

``meta.json`` is written when the run starts (``complete: false``, so that a restart can check it is
continuing the same job) and rewritten with the shard list and ``complete: true`` at the end; readers
refuse an incomplete folder.

:func:`make_token_loader` reads token shards with exactly the pipeline of :func:`magvit.data.make_loader`
(same shard shuffle, node/worker split, sample shuffle buffer and seeds; only the
:class:`~magvit.data.reader.SampleCodec` differs), so for the same seed a token loader yields the same keys
in the same order as a clip loader over the source dataset. Its batches are the
:class:`~magvit.batch.ClipBatch` records clip shards give, here holding ``tokens`` and the cached
conditions (and ``video`` too when the shards store clips).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from magvit.config import read_spec
from magvit.batch import ClipBatch
from magvit.data.atomic import write_text_atomic
from magvit.data.paths import local_path
from magvit.data.reader import CorruptSample, SampleCodec, ShardLoader, _Source, check_loader_options
from magvit.data.shard_format import CLIP_EXT, LABEL_EXT, META_NAME, ShardInfo, list_shard_files, record_from_json
from magvit.data.video_io import frames_to_video
from magvit.errors import InputError, MagvitError

__all__ = [
    "TOKEN_FORMAT",
    "TokenMeta",
    "cond_ext",
    "make_token_loader",
    "mask_ext",
    "read_token_meta",
    "write_token_meta",
]

TOKEN_FORMAT = "magvit-tokens"
TOKEN_FORMAT_VERSION = 1
TOKENS_EXT = "tok.npy"


def cond_ext(task: str) -> str:
    return f"cond-{task}.npy"


def mask_ext(task: str) -> str:
    return f"mask-{task}.npy"


def task_tokens_ext(task: str) -> str:
    return f"tok-{task}.npy"


def token_dtype(codebook_size: int) -> str:
    """The smallest signed integer type holding every code (torch has no uint16 arithmetic)."""
    return "int16" if codebook_size <= np.iinfo(np.int16).max + 1 else "int32"


@attrs.frozen
class TokenMeta:
    """The contents of a token-shard folder's ``meta.json``.

    Attributes:
        tokenizer_checkpoint: path of the tokenizer checkpoint, as given (for the record).
        tokenizer_sha256: its sha256: what training checks against its own tokenizer checkpoint.
        tokenizer: the tokenizer's registry spec (name and config).
        token_grid: ``(t, h, w)`` of every token array.
        codebook_size: number of codes.
        token_dtype: numpy dtype of the stored tokens.
        tasks: specs (:func:`magvit.config.part_spec`) of the cached (deterministic) tasks.
        conditioned: names of the cached tasks that store condition tokens (those with ``needs_video``).
        skipped_tasks: configured tasks that were not cached, ``{"name", "config", "reason"}``.
        token_rule: condition-token rule used for the masks (``supervoxel`` or ``analytic``).
        prompt_sharing: prompt sharing of the configured tasks (prompts do not affect the stored data).
        has_video: whether every sample also holds its uint8 clip.
        clip_shape: ``(T, H, W, 3)`` of the source clips.
        class_names: the source dataset's classes.
        source: the source clip-shard folder.
        batch_size: clips per encoder call (training at the same batch size gives bit-identical tokens; see
            :mod:`magvit.train.tokenize`). None in folders written before it was recorded.
        shards: the completed shards and their sample counts (empty until complete).
        complete: False while the run is in progress.
    """

    tokenizer_checkpoint: str
    tokenizer_sha256: str
    tokenizer: dict[str, Any]
    token_grid: tuple[int, int, int] = attrs.field(converter=tuple)
    codebook_size: int
    token_dtype: str
    tasks: tuple[dict[str, Any], ...] = attrs.field(converter=tuple)
    conditioned: tuple[str, ...] = attrs.field(converter=tuple)
    skipped_tasks: tuple[dict[str, Any], ...] = attrs.field(converter=tuple)
    token_rule: str
    prompt_sharing: str
    has_video: bool
    clip_shape: tuple[int, int, int, int] = attrs.field(converter=tuple)
    class_names: tuple[str, ...] = attrs.field(converter=tuple)
    source: str
    batch_size: int | None = None
    shards: tuple[ShardInfo, ...] = attrs.field(
        default=(), converter=lambda items: tuple(s if isinstance(s, ShardInfo) else ShardInfo(**s) for s in items)
    )
    complete: bool = False

    @property
    def num_clips(self) -> int:
        return sum(s.num_clips for s in self.shards)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(s["name"] for s in self.tasks)

    def job(self) -> dict[str, Any]:
        """Everything that determines the shards' contents (what a resumed run must agree with)."""
        body = attrs.asdict(self, recurse=True)
        for volatile in ("shards", "complete", "tokenizer_checkpoint"):
            body.pop(volatile)
        # Task specs written as {"name", "args"} and as {"name", "config"} describe the same job.
        body["tasks"] = [dict(zip(("name", "config"), read_spec("task", spec))) for spec in body["tasks"]]
        return json.loads(json.dumps(body))  # tuples -> lists, as read back from disk

    def to_json(self) -> str:
        body = {"format": TOKEN_FORMAT, "version": TOKEN_FORMAT_VERSION, "num_clips": self.num_clips,
                **attrs.asdict(self, recurse=True)}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TokenMeta:
        return record_from_json(cls, text, TOKEN_FORMAT, TOKEN_FORMAT_VERSION)


def write_token_meta(folder: str | os.PathLike[str], meta: TokenMeta) -> Path:
    return write_text_atomic(Path(folder) / META_NAME, meta.to_json())


def read_token_meta(folder: str | os.PathLike[str], *, require_complete: bool = True) -> TokenMeta:
    """Read a token-shard folder's ``meta.json``.

    Raises:
        MagvitError: a URL instead of a local folder, missing folder or meta, not a token-shard folder, or
            (``require_complete``) a run that has not finished.
    """
    folder = local_path(folder, "token folder")
    path = folder / META_NAME
    if not path.is_file():
        raise MagvitError(f"{folder} is not a token-shard folder (no {META_NAME}); write one with "
                          "`magvit data tokenize --tokenizer_checkpoint CKPT --src CLIPS --out DIR`")
    try:
        meta = TokenMeta.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise MagvitError(f"{path} is not a valid token-shard description: {exc}") from exc
    if require_complete and not meta.complete:
        raise MagvitError(f"{folder}: the tokenize run that writes it has not finished; re-run the same "
                          "`magvit data tokenize` command to complete it (finished shards are kept)")
    return meta


# -- decoding -----------------------------------------------------------------------------------------


def _load_npy(raw: bytes, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{what}: {exc}") from exc


class _TokenDecoder:
    """Raw sample -> arrays, checked against the folder's grid; raises :class:`CorruptSample`."""

    def __init__(self, grid: tuple[int, ...], tasks: Sequence[str], video: bool, clip_shape: tuple[int, ...],
                 num_classes: int, all_tasks: Sequence[str] = ()) -> None:
        self.grid, self.tasks, self.video, self.all_tasks = tuple(grid), tuple(tasks), video, tuple(all_tasks)
        self.clip_shape, self.num_classes = tuple(clip_shape), num_classes

    def _grid(self, arr: np.ndarray, what: str, kind: str) -> np.ndarray:
        if arr.shape != self.grid or (kind == "int" and arr.dtype.kind != "i") or (kind == "bool" and arr.dtype != bool):
            raise ValueError(f"{what} must be {kind} {self.grid}, got {arr.dtype} {arr.shape}")
        return arr

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, shard = sample.get("__key__"), str(sample.get("__url__", "?"))
        try:
            out: dict[str, Any] = {"key": key, "cond": {}, "mask": {}, "clip": None, "own": {}}
            out["tokens"] = self._grid(_load_npy(sample[TOKENS_EXT], "tokens"), "tokens", "int")
            for task in self.all_tasks:
                if task_tokens_ext(task) in sample:
                    out["own"][task] = self._grid(_load_npy(sample[task_tokens_ext(task)], task), f"{task} tokens", "int")
            for task in self.tasks:
                out["cond"][task] = self._grid(_load_npy(sample[cond_ext(task)], task), f"{task} condition", "int")
                out["mask"][task] = self._grid(_load_npy(sample[mask_ext(task)], task), f"{task} mask", "bool")
            if self.video:
                clip = _load_npy(sample[CLIP_EXT], "clip")
                if clip.dtype != np.uint8 or clip.shape != self.clip_shape:
                    raise ValueError(f"clip must be uint8 {self.clip_shape}, got {clip.dtype} {clip.shape}")
                out["clip"] = clip
            out["label"] = int(sample[LABEL_EXT])
            if not 0 <= out["label"] < max(self.num_classes, 1):
                raise ValueError(f"label {out['label']} outside [0, {self.num_classes})")
        except KeyError as exc:
            raise CorruptSample(shard, key, f"missing member .{exc.args[0]}") from exc
        except (ValueError, TypeError) as exc:
            raise CorruptSample(shard, key, f"{type(exc).__name__}: {exc}") from exc
        return out


@attrs.frozen
class _TokenRows:
    """A collated batch still in storage dtypes (int16 tokens, uint8 frames): small to pass out of a worker
    (:class:`~magvit.data.reader.Rows`)."""

    tokens: Tensor
    cond: dict[str, Tensor]
    mask: dict[str, Tensor]
    label: Tensor
    keys: tuple[str, ...]
    frames: Tensor | None
    own: dict[str, Tensor]

    def to_batch(self) -> ClipBatch:
        return ClipBatch(
            label=self.label, keys=self.keys, video=None if self.frames is None else frames_to_video(self.frames),
            tokens=self.tokens.long(), task_tokens={k: v.long() for k, v in self.own.items()},
            cond_tokens={k: v.long() for k, v in self.cond.items()}, cond_mask=dict(self.mask),
        )


def _collate(samples: list[dict[str, Any]]) -> _TokenRows:
    def stack(arrays: Iterable[np.ndarray]) -> Tensor:
        return torch.from_numpy(np.stack(list(arrays)))

    tasks = samples[0]["cond"].keys()
    own = sorted({t for s in samples for t in s["own"]})  # a sample without its own copy uses ``tok``
    return _TokenRows(
        stack(s["tokens"] for s in samples),
        {t: stack(s["cond"][t] for s in samples) for t in tasks},
        {t: stack(s["mask"][t] for s in samples) for t in tasks},
        torch.tensor([s["label"] for s in samples], dtype=torch.long),
        tuple(s["key"] for s in samples),
        None if samples[0]["clip"] is None else stack(s["clip"] for s in samples),
        {t: stack(s["own"].get(t, s["tokens"]) for s in samples) for t in own},
    )


# -- the loader ---------------------------------------------------------------------------------------


def make_token_loader(
    source: str | os.PathLike[str],
    batch_size: int,
    *,
    tasks: Sequence[str] | None = None,
    video: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    resampled: bool = False,
    batches_per_epoch: int | None = None,
    drop_last: bool = False,
    shuffle_buffer: int = 1000,
    start_epoch: int = 0,
) -> ShardLoader:
    """A loader of :class:`~magvit.batch.ClipBatch` from a token-shard folder (``tokens``, the cached conditions
    of ``tasks``, and ``video`` when asked); arguments as :func:`magvit.data.make_loader`.

    Args:
        source: a token-shard folder (written by ``magvit data tokenize``).
        tasks: cached tasks whose condition tokens to read (default: all stored); others are not decoded.
        video: also read the uint8 clips (the folder must have been written with them).

    Raises:
        InputError: bad sizes, unknown tasks, or ``video`` without stored clips.
        MagvitError: not a complete token-shard folder, or shards missing.
    """
    check_loader_options(batch_size, num_workers, shuffle_buffer, resampled, batches_per_epoch)
    meta = read_token_meta(source)
    stored = meta.conditioned
    wanted = stored if tasks is None else tuple(t for t in tasks if t in stored)
    unknown = [t for t in (tasks or ()) if t not in meta.task_names]
    if unknown:
        raise InputError(f"tasks {unknown} are not cached in {source} (cached: {', '.join(meta.task_names)})")
    if video and not meta.has_video:
        raise InputError(f"{source} holds no clips (tokenised without store_video); it cannot deliver video")
    files = {f.name: f for f in list_shard_files(source)}
    missing = [s.name for s in meta.shards if s.name not in files]
    if missing:
        raise MagvitError(f"{source}: meta.json lists shards that are missing: {', '.join(missing)}")
    urls = tuple(str(files[s.name]) for s in sorted(meta.shards, key=lambda s: s.name))
    decoder = _TokenDecoder(meta.token_grid, wanted, video, meta.clip_shape, meta.num_classes, meta.task_names)
    return ShardLoader(
        source=_Source(urls, None, meta.num_classes, meta.num_clips), batch_size=batch_size, shuffle=shuffle,
        seed=seed, num_workers=num_workers, resampled=resampled, batches_per_epoch=batches_per_epoch,
        drop_last=drop_last, shuffle_buffer=shuffle_buffer, codec=SampleCodec(decoder, _collate), epoch=start_epoch,
    )
