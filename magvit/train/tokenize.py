"""Tokenise a clip dataset once, so that transformer training reads tokens instead of running the encoder.

In the authors' recipe (``videogvt/trainers/maskgvt_trainer.py``) every transformer step runs the frozen
3D-VQ encoder on the real clip and on the task's padded condition video. For a task whose condition is a
deterministic function of the clip (``Task.deterministic``; all built-in tasks) both token grids are the
same at every epoch, so :func:`tokenize_shards` computes them once per clip. The on-disk format is
described in :mod:`magvit.train.token_cache`.

Exactness: every task's tokens are computed by :meth:`magvit.objective.MultiTaskObjective.tokenize`
itself, the call training makes on the fly (``encode(cat([clips, condition]))``), so for the same batch
of clips the cache holds the same tokens bit for bit. The encoder has no batch statistics, but its
kernels (oneDNN on CPU, cuDNN on GPU) pick algorithms by batch size, so a different batch size rounds
differently in the last bit and can, rarely, flip a code at a near tie: tokenise with the training
batch size when exact agreement matters. Because of that rounding the ground-truth tokens of one clip
can differ between tasks' calls (cg encodes ``B`` clips, the others ``2B``); the first task's are stored
as ``tok`` and any other task's differing ones as ``tok-<task>`` (see :mod:`magvit.train.token_cache`).

Checks before anything is written: the task options name real arguments of their tasks, the tokenizer
encodes a first batch of clips for every task (clip size, task conditions), and it has not collapsed
(every token of that batch one code: a diverged run). A run that fails them leaves no ``meta.json``.

One writer: the run holds :class:`magvit.locking.FolderLock` on ``out`` from before its first write to its
end, so a second ``data tokenize`` into the same folder is refused at once, naming the holder's pid.

Resumption: one output shard per input shard, same name, written under a hidden temporary name unique to
the process (:func:`magvit.data.atomic.atomic_path`) and renamed when complete. A restarted run checks that
``meta.json`` describes the same job (tokenizer hash, tasks, rule, batch size), skips the output shards
that exist and rewrites the others, so no sample is ever written twice; a ``meta.json`` without any
finished shard is a fresh start (nothing was made under it). Under torchrun (``RANK``/``WORLD_SIZE``) rank
``i`` takes input shards ``i, i + world, ...`` of the sorted list, and each rank holds a lock of its own
(the ranks of one job share the folder); whichever process finds every output shard present at its end
writes the final ``meta.json``.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from tqdm import tqdm

from magvit.checkpoint import file_sha256
from magvit.config import part_spec
from magvit.data.atomic import atomic_path
from magvit.data.paths import local_path
from magvit.data.reader import SkippedSample, SkipRecorder, _FrameBatch, collate_clips, decode_clip, shard_samples
from magvit.data.shard_format import (
    CLIP_EXT,
    LABEL_EXT,
    META_NAME,
    DatasetMeta,
    ShardInfo,
    list_shard_files,
    read_meta,
)
from magvit.data.video_io import frames_to_video
from magvit.errors import InputError, MagvitError
from magvit.locking import FolderLock
from magvit.masking import TOKEN_RULES
from magvit.objective import MultiTaskObjective, ObjectiveConfig
from magvit.pipeline import load_tokenizer
from magvit.tasks import build_tasks
from magvit.train.token_cache import (
    TOKENS_EXT,
    TokenMeta,
    cond_ext,
    mask_ext,
    read_token_meta,
    task_tokens_ext,
    token_dtype,
    write_token_meta,
)

__all__ = ["TokenizeReport", "tokenize_shards"]


@attrs.frozen
class TokenizeReport:
    """What one ``tokenize_shards`` call did.

    Attributes:
        out: the token-shard folder.
        written: output shards written by this process, with their sample counts.
        kept: output shards that already existed (a resumed run) and were left as they were.
        skipped_samples: corrupt input samples that were not tokenised.
        cached_tasks: tasks whose condition tokens are stored.
        skipped_tasks: configured tasks that are not deterministic (tokenised on the fly in training).
        complete: True when every output shard exists and ``meta.json`` is final.
        meta: the final :class:`~magvit.train.token_cache.TokenMeta` (None while other ranks are still writing).
    """

    out: Path
    written: tuple[ShardInfo, ...]
    kept: tuple[str, ...]
    skipped_samples: tuple[SkippedSample, ...]
    cached_tasks: tuple[str, ...]
    skipped_tasks: tuple[str, ...]
    complete: bool
    meta: TokenMeta | None

    @property
    def num_written(self) -> int:
        return sum(s.num_clips for s in self.written)

    def __str__(self) -> str:
        lines = [
            f"{self.out}: wrote {len(self.written)} shards ({self.num_written} clips), kept {len(self.kept)} finished "
            f"shards, skipped {len(self.skipped_samples)} corrupt samples",
            f"cached tasks: {', '.join(self.cached_tasks) or '-'}",
        ]
        if self.skipped_tasks:
            lines.append(f"not cached (random condition, tokenised on the fly): {', '.join(self.skipped_tasks)}")
        lines.append("complete" if self.complete else "incomplete: other ranks are still writing their shards")
        return "\n".join(lines)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _read_batches(url: str, batch_size: int, clip_shape: tuple[int, ...], num_classes: int,
                  recorder: Callable[[BaseException], bool]) -> Iterator[_FrameBatch]:
    # Not make_eval_loader: that splits its shard list by rank again, while here the rank split is made
    # once on the full sorted list (before finished shards are dropped), so every rank always owns the
    # same shards across restarts. The stages are the eval loader's: file order, last batch kept.
    pipeline = wds.DataPipeline(
        wds.SimpleShardList([url]),
        wds.pipelinefilter(shard_samples)(recorder),
        wds.map(partial(decode_clip, expected_shape=clip_shape, num_classes=num_classes), handler=recorder),
        wds.batched(batch_size, collation_fn=collate_clips, partial=True),
    )
    return iter(pipeline)


def _count_samples(path: Path) -> int:
    """Number of distinct sample keys in a tar (member ``<key>.<ext>``)."""
    with tarfile.open(path) as tar:
        return len({Path(m.name).name.split(".", 1)[0] for m in tar.getmembers() if m.isfile()})


class _NoTask:
    """Placeholder so that an objective exists when no configured task can be cached."""

    name, prompt, uses_class, needs_video, deterministic = "none", "none", False, False, True


class _ShardTokenizer:
    """Encodes batches of clips into the members of their token samples."""

    def __init__(self, tokenizer: Any, tasks: list[Any], token_rule: str, dtype: str, store_video: bool,
                 device: torch.device) -> None:
        # The objective's own tokenize() is what training calls on the fly; task_weights do not matter here.
        self.objective = MultiTaskObjective(tokenizer, tasks or [_NoTask()], config=ObjectiveConfig(token_rule=token_rule))
        self.tasks, self.store_video, self.device = tasks, store_video, device
        self.dtype = np.dtype(dtype)

    def _grid(self, flat: Tensor, grid: tuple[int, ...]) -> np.ndarray:
        return flat.reshape(-1, *grid).cpu().numpy().astype(self.dtype)

    @torch.no_grad()
    def samples(self, batch: _FrameBatch, grid: tuple[int, ...]) -> list[dict[str, Any]]:
        video = frames_to_video(batch.frames).to(self.device)
        members: list[dict[str, Any]] = [
            {"__key__": key, LABEL_EXT: str(int(batch.label[i])).encode()} for i, key in enumerate(batch.keys)
        ]
        if not self.tasks:  # every configured task is random: only the ground truth (for the record)
            tokens = self._grid(self.objective.tokenizer.encode(video), grid)
            for i, m in enumerate(members):
                m[TOKENS_EXT] = _npy(tokens[i])
        for task in self.tasks:
            tb = self.objective.tokenize(video, task)  # deterministic: no generator
            tokens = self._grid(tb.tokens, grid)
            for i, m in enumerate(members):
                if TOKENS_EXT not in m:
                    m[TOKENS_EXT] = _npy(tokens[i])
                elif not np.array_equal(np.load(io.BytesIO(m[TOKENS_EXT])), tokens[i]):
                    m[task_tokens_ext(task.name)] = _npy(tokens[i])  # rounding flipped a near tie (docstring)
            if tb.cond_tokens is None:
                continue  # cg: ground-truth tokens and the label are all its training step needs
            cond_tokens = self._grid(tb.cond_tokens, grid)
            mask = tb.cond_mask.reshape(-1, *grid).cpu().numpy()
            for i, m in enumerate(members):
                m[cond_ext(task.name)] = _npy(cond_tokens[i])
                m[mask_ext(task.name)] = _npy(mask[i].astype(bool))
        if self.store_video:
            for i, m in enumerate(members):
                m[CLIP_EXT] = _npy(batch.frames[i].numpy())
        return members


def _write_shard(url: Path, target: Path, coder: _ShardTokenizer, batch_size: int, clip_shape: tuple[int, ...],
                 num_classes: int, grid: tuple[int, ...], recorder: SkipRecorder, advance: Callable[[int], Any]) -> int:
    """Tokenise one input shard into ``target`` (written under a temporary name, then renamed); returns the
    number of samples. ``advance(n)`` is called after each encoded batch of ``n`` clips (the progress bar)."""
    count = 0
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        writer = wds.TarWriter(handle, mtime=0)  # fixed mtimes: the same input gives the same bytes
        for batch in _read_batches(str(url), batch_size, clip_shape, num_classes, recorder):
            samples = coder.samples(batch, grid)
            for sample in samples:
                writer.write(sample)
            count += len(samples)
            advance(len(samples))
        writer.close()
    return count


def _remove_leftovers(target: Path) -> None:
    """Delete the temporary files of ``target`` left by killed runs (this process holds the lock on it)."""
    for path in [target.with_name(target.name + ".partial"), *target.parent.glob(f".{target.name}.partial-*")]:
        path.unlink(missing_ok=True)


def _resumed_header(out: Path, header: TokenMeta) -> TokenMeta:
    """``header`` for continuing the run in ``out``; refuses a folder that holds a different job.

    A field the folder did not record (None: ``batch_size`` in folders older than that field) neither constrains
    the resume nor is claimed afterwards: the shards already there were made under an unknown value.
    """
    old, new = read_token_meta(out, require_complete=False).job(), header.job()
    unrecorded = {k: None for k in new if old.get(k) is None}
    diff = [k for k in new if k not in unrecorded and old[k] != new[k]]
    if diff:
        raise MagvitError(
            f"{out} holds token shards of a different job ({', '.join(diff)} differ); choose a new --out folder "
            "or delete the old one"
        )
    return attrs.evolve(header, **unrecorded)


def _start(out: Path, header: TokenMeta) -> TokenMeta:
    """Write or check ``out/meta.json`` before the first shard; returns the header this run continues.

    A ``meta.json`` next to no finished shard is a fresh start: nothing was made under it (a run that failed
    or was killed before its first shard), so it neither constrains nor blocks the corrected command.
    """
    if (out / META_NAME).exists() and list_shard_files(out):
        return _resumed_header(out, header)
    write_token_meta(out, header)
    return header


def _build_task_list(tasks: list[str] | str, prompt_sharing: str, options: Mapping[str, Any] | None) -> list[Any]:
    """The tasks to tokenise; a bad name or option is one :class:`InputError` (:func:`magvit.tasks.build_task`)."""
    task_list = build_tasks(tasks, prompt_sharing=prompt_sharing, options=options)
    dotted = [t.name for t in task_list if "." in t.name]
    if dotted:  # a dot would end the webdataset key of the member
        raise InputError(f"task names must not contain '.', got {dotted}")
    return task_list


#: Clips encoded by the check before a run: enough to tell a collapsed tokenizer (one code for every token).
_CHECK_CLIPS = 4


def _first_batch(inputs: Sequence[Path], clip_shape: tuple[int, ...], num_classes: int) -> _FrameBatch | None:
    """The first readable clips of the dataset (corrupt samples are skipped quietly: the run reports them)."""
    for url in inputs:
        for batch in _read_batches(str(url), _CHECK_CLIPS, clip_shape, num_classes, lambda exn: True):
            return batch
    return None


def _check_encoding(coder: _ShardTokenizer, batch: _FrameBatch, grid: tuple[int, ...], checkpoint: str,
                    src: Path) -> None:
    """Encode one batch for every task exactly as the run will: any mismatch between the tokenizer, the clips
    and the tasks fails here, before anything is written. Also refuses a collapsed tokenizer."""
    try:
        samples = coder.samples(batch, grid)
    except MagvitError:
        raise
    except (RuntimeError, ValueError) as exc:
        t, h, w, _ = batch.frames.shape[1:]
        raise MagvitError(f"tokenizer {checkpoint} cannot encode the {t}x{h}x{w} clips of {src}: "
                          f"{type(exc).__name__}: {exc}") from exc
    tokens = np.stack([np.load(io.BytesIO(m[TOKENS_EXT]), allow_pickle=False) for m in samples])
    if tokens.size > 1 and (tokens == tokens.flat[0]).all():
        raise MagvitError(
            f"the tokenizer {checkpoint} maps every token of the first batch ({len(samples)} clips of {src}) to "
            f"code {int(tokens.flat[0])}: it has collapsed (a diverged run?); check it with `magvit evaluate`"
        )


def _writer_lock(out: Path, rank: int, world: int) -> FolderLock:
    if world == 1:
        return FolderLock(out, "token folder")
    # The ranks of one torchrun job write disjoint shards of one folder at the same time: each rank holds a
    # lock of its own, which refuses a second writer of that rank's shards.
    return FolderLock(out / f".rank-{rank}-lock", f"token folder {out} (rank {rank}):")


def tokenize_shards(
    tokenizer_checkpoint: str | os.PathLike[str],
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tasks: list[str] | str = "all",
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
    prompt_sharing: str = "paper",
    token_rule: str = "supervoxel",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    store_video: bool | None = None,
    progress: bool = False,
) -> TokenizeReport:
    """Tokenise the clip shards of ``src`` into token shards in ``out`` (resumable; see the module docstring).

    Args:
        tokenizer_checkpoint: tokenizer-stage checkpoint; its EMA weights are the frozen tokenizer.
        src: a clip-shard folder (with ``meta.json``).
        out: the token-shard folder (created; a previous run of the same job is continued).
        tasks: task names or ``"all"``; the condition of every deterministic one is cached.
        task_options: per-task constructor arguments, e.g. ``{"fp": {"cond_frames": 5}}``.
        prompt_sharing: as in training (recorded; prompts do not change the tokens).
        token_rule: ``"supervoxel"`` (paper) or ``"analytic"`` (authors' code) condition-token masks.
        batch_size: clips per encoder call.
        device: encoder device (default: CUDA when available).
        store_video: also store each uint8 clip; ``None`` stores them iff a configured task is not
            deterministic (training tokenises those from the stored clip).
        progress: show a tqdm progress bar over this process's clips (on stderr).

    Raises:
        MagvitError: bad source, tokenizer checkpoint, or an ``out`` folder of a different job.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if token_rule not in TOKEN_RULES:
        raise InputError(f"token_rule must be one of {list(TOKEN_RULES)}, got {token_rule!r}")
    src, out = local_path(src), local_path(out, "token folder", use="writes data to")
    if out.exists() and not out.is_dir():
        raise MagvitError(f"token folder {out} is a file, not a folder: choose another --out path")
    src_meta = read_meta(src)
    if src_meta.store != "frames":
        raise MagvitError(f"{src} holds stored videos (store: {src_meta.store}), from which the reader cuts a new "
                          "clip every epoch, while token shards fix one clip per sample: tokenise a dataset written "
                          "with `magvit data shards --store frames`")
    listed = {s.name for s in src_meta.shards}
    inputs = [f for f in list_shard_files(src) if f.name in listed]
    if len(inputs) != len(listed):
        raise MagvitError(f"{src}: meta.json lists {len(listed)} shards but {len(inputs)} are present")
    if not Path(tokenizer_checkpoint).is_file():
        raise MagvitError(f"tokenizer checkpoint {tokenizer_checkpoint} does not exist")
    task_list = _build_task_list(tasks, prompt_sharing, task_options)
    cached = [t for t in task_list if t.deterministic]
    random_tasks = [t for t in task_list if not t.deterministic]
    if store_video is None:
        store_video = bool(random_tasks)

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, spec = load_tokenizer(tokenizer_checkpoint)
    tokenizer.to(dev)
    frames, height, width, _ = src_meta.clip_shape
    grid = tuple(tokenizer.token_shape(frames, height, width))
    header = TokenMeta(
        tokenizer_checkpoint=str(tokenizer_checkpoint),
        tokenizer_sha256=file_sha256(tokenizer_checkpoint),
        tokenizer=spec,
        token_grid=grid,
        codebook_size=int(tokenizer.codebook_size),
        token_dtype=token_dtype(int(tokenizer.codebook_size)),
        tasks=[part_spec(t) for t in cached],
        conditioned=[t.name for t in cached if t.needs_video],
        skipped_tasks=[{**part_spec(t), "reason": "not deterministic"} for t in random_tasks],
        token_rule=token_rule,
        prompt_sharing=prompt_sharing,
        has_video=store_video,
        clip_shape=src_meta.clip_shape,
        class_names=src_meta.class_names,
        source=str(src.resolve()),  # resolved: a restart from another working directory is the same job
        batch_size=batch_size,
    )
    rank, world = _rank_world()
    mine = inputs[rank::world]
    coder = _ShardTokenizer(tokenizer, cached, token_rule, header.token_dtype, store_video, dev)
    with _writer_lock(out, rank, world):
        if any(not (out / u.name).exists() for u in mine):
            first = _first_batch(inputs, tuple(src_meta.clip_shape), src_meta.num_classes)
            if first is not None:
                _check_encoding(coder, first, grid, str(tokenizer_checkpoint), src)
        header = _start(out, header)
        written, kept, skipped = _write_missing(out, mine, coder, src_meta, grid, batch_size, progress)
        meta = _finish(out, inputs, header, written)
    if skipped:
        warnings.warn(f"tokenize: skipped {len(skipped)} corrupt samples", stacklevel=2)
    return TokenizeReport(out, tuple(written), tuple(kept), tuple(skipped), tuple(t.name for t in cached),
                          tuple(t.name for t in random_tasks), meta is not None, meta)


def _write_missing(out: Path, mine: list[Path], coder: _ShardTokenizer, src_meta: DatasetMeta,
                   grid: tuple[int, ...], batch_size: int,
                   progress: bool) -> tuple[list[ShardInfo], list[str], list[SkippedSample]]:
    """Write the shards of ``mine`` that ``out`` lacks: ``(written, kept, skipped samples)``."""
    recorder = SkipRecorder()
    written: list[ShardInfo] = []
    kept: list[str] = []
    skipped: list[SkippedSample] = []
    clips = {s.name: s.num_clips for s in src_meta.shards}
    total = sum(clips[u.name] for u in mine)
    with tqdm(total=total, desc="tokenize", unit="clip", disable=not progress, dynamic_ncols=True) as bar:
        for url in mine:
            target = out / url.name
            if target.exists():  # finished by an earlier run (only complete shards carry the final name)
                kept.append(url.name)
                bar.update(clips[url.name])
                continue
            _remove_leftovers(target)
            n = _write_shard(url, target, coder, batch_size, tuple(src_meta.clip_shape), src_meta.num_classes,
                             grid, recorder, bar.update)
            skipped += recorder.drain()
            written.append(ShardInfo(url.name, n))
    return written, kept, skipped


def _finish(out: Path, inputs: list[Path], header: TokenMeta, written: list[ShardInfo]) -> TokenMeta | None:
    """The final ``meta.json`` once every output shard exists (other ranks may still be writing theirs)."""
    names = [f.name for f in inputs]
    if not all((out / n).exists() for n in names):
        return None
    counts = {s.name: s.num_clips for s in written}
    shards = [ShardInfo(n, counts[n] if n in counts else _count_samples(out / n)) for n in names]
    meta = attrs.evolve(header, shards=shards, complete=True)
    write_token_meta(out, meta)
    return meta
