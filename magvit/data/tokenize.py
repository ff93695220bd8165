"""Tokenise a clip dataset once, so that transformer training reads tokens instead of running the encoder.

In the paper's recipe (reference 1.5) every transformer step runs the frozen 3D-VQ encoder on the real
clip and on the task's padded condition video. For a task whose condition is a deterministic function of
the clip (``Task.deterministic``; all built-in tasks) both token grids are the same at every epoch, so
:func:`tokenize_shards` computes them once per clip. The on-disk format is described in
:mod:`magvit.data.tokens`.

Exactness: every task's tokens are computed by :meth:`magvit.objective.MultiTaskObjective.tokenize`
itself, the call training makes on the fly (``encode(cat([clips, condition]))``), so for the same batch
of clips the cache holds the same tokens bit for bit. The encoder has no batch statistics, but its
kernels (oneDNN on CPU, cuDNN on GPU) pick algorithms by batch size, so a different batch size rounds
differently in the last bit and can, rarely, flip a code at a near tie: tokenise with the training
batch size when exact agreement matters. Because of that rounding the ground-truth tokens of one clip
can differ between tasks' calls (cg encodes ``B`` clips, the others ``2B``); the first task's are stored
as ``tok`` and any other task's differing ones as ``tok-<task>`` (see :mod:`magvit.data.tokens`).

Resumption: one output shard per input shard, same name, written as ``<name>.partial`` and renamed when
complete. A restarted run checks that ``meta.json`` describes the same job (tokenizer hash, tasks, rule,
batch size), skips the output shards that exist and rewrites the others, so no sample is ever written twice.
Under torchrun (``RANK``/``WORLD_SIZE``) rank ``i`` takes input shards ``i, i + world, ...`` of the sorted
list; whichever process finds every output shard present at its end writes the final ``meta.json``.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from tqdm import tqdm

from magvit.data.reader import SkippedSample, SkipRecorder, _FrameBatch, collate_clips, decode_clip
from magvit.data.shard_format import CLIP_EXT, LABEL_EXT, META_NAME, ShardInfo, list_shard_files, read_meta
from magvit.data.tokens import (
    TOKENS_EXT,
    TokenMeta,
    cond_ext,
    mask_ext,
    read_token_meta,
    task_tokens_ext,
    token_dtype,
    write_token_meta,
)
from magvit.data.video_io import frames_to_video
from magvit.errors import InputError, MagvitError

__all__ = ["TokenizeReport", "tokenize_shards"]

_PARTIAL = ".partial"


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
        meta: the final :class:`~magvit.data.tokens.TokenMeta` (None while other ranks are still writing).
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
                  recorder: SkipRecorder) -> Iterator[_FrameBatch]:
    # Not make_eval_loader: that splits its shard list by rank again, while here the rank split is made
    # once on the full sorted list (before finished shards are dropped), so every rank always owns the
    # same shards across restarts. The stages are the eval loader's: file order, last batch kept.
    pipeline = wds.DataPipeline(
        wds.SimpleShardList([url]),
        wds.tarfile_to_samples(handler=recorder),
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
        from magvit.objective import MultiTaskObjective, ObjectiveConfig

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
    """Tokenise one input shard into ``target`` (via ``target.partial``); returns the number of samples.

    ``advance(n)`` is called after each encoded batch of ``n`` clips (the progress bar)."""
    partial_path = target.with_name(target.name + _PARTIAL)
    count = 0
    try:
        with open(partial_path, "wb") as handle:
            writer = wds.TarWriter(handle, mtime=0)  # fixed mtimes: the same input gives the same bytes
            for batch in _read_batches(str(url), batch_size, clip_shape, num_classes, recorder):
                samples = coder.samples(batch, grid)
                for sample in samples:
                    writer.write(sample)
                count += len(samples)
                advance(len(samples))
            writer.close()
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        partial_path.unlink(missing_ok=True)
        raise
    os.replace(partial_path, target)
    return count


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
    from magvit.masking import TOKEN_RULES
    from magvit.pipeline import load_tokenizer, task_spec
    from magvit.tasks import build_tasks
    from magvit.metrics.cache import file_sha256

    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if token_rule not in TOKEN_RULES:
        raise InputError(f"token_rule must be one of {list(TOKEN_RULES)}, got {token_rule!r}")
    src, out = Path(src), Path(out)
    src_meta = read_meta(src)
    listed = {s.name for s in src_meta.shards}
    inputs = [f for f in list_shard_files(src) if f.name in listed]
    if len(inputs) != len(listed):
        raise MagvitError(f"{src}: meta.json lists {len(listed)} shards but {len(inputs)} are present")
    if not Path(tokenizer_checkpoint).is_file():
        raise MagvitError(f"tokenizer checkpoint {tokenizer_checkpoint} does not exist")
    try:
        task_list = build_tasks(tasks, prompt_sharing=prompt_sharing, options=task_options)
    except ValueError as exc:
        raise MagvitError(str(exc)) from exc
    dotted = [t.name for t in task_list if "." in t.name]
    if dotted:  # a dot would end the webdataset key of the member
        raise InputError(f"task names must not contain '.', got {dotted}")
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
        tasks=[task_spec(t) for t in cached],
        conditioned=[t.name for t in cached if t.needs_video],
        skipped_tasks=[{**task_spec(t), "reason": "not deterministic"} for t in random_tasks],
        token_rule=token_rule,
        prompt_sharing=prompt_sharing,
        has_video=store_video,
        clip_shape=src_meta.clip_shape,
        class_names=src_meta.class_names,
        source=str(src.resolve()),  # resolved: a restart from another working directory is the same job
        batch_size=batch_size,
    )
    out.mkdir(parents=True, exist_ok=True)
    if (out / META_NAME).exists():
        header = _resumed_header(out, header)
    else:
        write_token_meta(out, header)

    rank, world = _rank_world()
    coder = _ShardTokenizer(tokenizer, cached, token_rule, header.token_dtype, store_video, dev)
    recorder = SkipRecorder()
    written, kept, skipped = [], [], []
    mine = inputs[rank::world]
    clips = {s.name: s.num_clips for s in src_meta.shards}
    total = sum(clips[u.name] for u in mine)
    with tqdm(total=total, desc="tokenize", unit="clip", disable=not progress, dynamic_ncols=True) as bar:
        for url in mine:
            target = out / url.name
            if target.exists():  # finished by an earlier run (only complete shards carry the final name)
                kept.append(url.name)
                bar.update(clips[url.name])
                continue
            n = _write_shard(url, target, coder, batch_size, tuple(src_meta.clip_shape), src_meta.num_classes,
                             grid, recorder, bar.update)
            skipped += recorder.drain()
            written.append(ShardInfo(url.name, n))

    names = [f.name for f in inputs]
    done = all((out / n).exists() for n in names)
    meta = None
    if done:
        counts = {s.name: s.num_clips for s in written}
        shards = [ShardInfo(n, counts[n] if n in counts else _count_samples(out / n)) for n in names]
        meta = attrs.evolve(header, shards=shards, complete=True)
        write_token_meta(out, meta)
    if skipped:
        warnings.warn(f"tokenize: skipped {len(skipped)} corrupt samples", stacklevel=2)
    return TokenizeReport(out, tuple(written), tuple(kept), tuple(skipped), tuple(t.name for t in cached),
                          tuple(t.name for t in random_tasks), done, meta)
