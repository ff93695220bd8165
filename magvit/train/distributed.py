"""Process-group set-up for ``torchrun`` (DDP): gloo on the CPU, nccl on CUDA.

The same code runs single-process (no ``WORLD_SIZE`` in the environment) and under ``torchrun``.
"""

from __future__ import annotations

import os

import attrs
import torch
import torch.distributed as dist

from magvit.errors import MagvitError
from magvit.locking import FolderLock


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | None) -> torch.device:
    """The device ``--device NAME`` asks for (None: CUDA when available, else the CPU).

    Raises:
        MagvitError: not a device name, a device other than cpu/cuda, or CUDA asked for but not usable.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MagvitError(f"--device {name!r} is not a device name; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise MagvitError(f"--device {name} is not supported; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MagvitError(f"--device {name} was asked for but torch.cuda.is_available() is False; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MagvitError(f"--device {name} was asked for but only {torch.cuda.device_count()} CUDA devices are "
                          "visible; use --device cuda")
    return device


def setup(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device (:func:`resolve_device`).

    Under torchrun each process uses the CUDA device of its local rank.
    """
    requested = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = requested.type == "cuda"
    dev = requested
    if use_cuda:
        dev = torch.device("cuda", requested.index if requested.index is not None and world == 1 else local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over ranks (for logs only; gradients are reduced by DDP)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def pooled_means(sums: dict[str, tuple[float, float]], info: DistInfo) -> dict[str, float]:
    """``sum / count`` of each ``{name: (sum, count)}`` with sums and counts added over ranks: the mean over
    every sample of every rank (:func:`mean_across_ranks` of per-rank means weighs ranks equally, whatever
    their counts). Names with a total count of 0 are left out; every rank must pass the same names."""
    keys = sorted(sums)
    if info.distributed and keys:
        t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=info.device)
        dist.all_reduce(t)
        sums = {k: (float(s), float(n)) for k, (s, n) in zip(keys, t.tolist())}
    return {k: sums[k][0] / sums[k][1] for k in keys if sums[k][1] > 0}


def all_ranks_true(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` holds on every rank (one all-reduce), so that all ranks take the same branch."""
    if not info.distributed:
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int32, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) == 0


def lock_folder(folder: str | os.PathLike[str], what: str, info: DistInfo) -> FolderLock | None:
    """Take the exclusive lock of an output folder for the run (:class:`magvit.locking.FolderLock`).

    Rank 0 takes it; under torchrun the outcome is broadcast, so every rank of a refused job stops with the
    same one-line error instead of the others waiting for a rank that has gone. Returns the lock on rank 0
    (the caller releases it), None on the other ranks.
    """
    lock, failure = None, None
    if info.is_main:
        lock = FolderLock(folder, what)
        try:
            lock.acquire()
        except MagvitError as exc:
            failure = exc
        except OSError as exc:  # e.g. a read-only folder: the lock file cannot be created
            failure = MagvitError(f"cannot write to {what} {folder}: {exc}")
    if info.distributed:
        box = [None if failure is None else str(failure)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and failure is None:
            failure = MagvitError(box[0])
    if failure is not None:
        raise failure
    return lock
