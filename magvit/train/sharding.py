"""Fully sharded training (``--trainer.strategy fsdp``): PyTorch's FSDP2 and sharded checkpoints.

Sharding: :func:`shard` applies ``torch.distributed.fsdp.fully_shard`` to each unit a model names through a
``shard_units()`` method (the transformer's blocks, the tokenizer's encoder levels and its decoder levels'
blocks and upsampling convs, the discriminator's blocks), then to the model itself for what is left
(embeddings, heads, norms, the codebook). A phase whose ``PhaseSpec.shardable`` is False (the discriminator,
differentiated twice by its R1 penalty) stays data-parallel. Each unit's parameters are all-gathered just before its forward and
backward and freed after, so a process holds one unit's full weights at a time, plus its shard of the rest.

Checkpoints (``last.dcp/``): every process writes its own shards through ``torch.distributed.checkpoint``
(DCP), which reshards on load, so a run can resume on another number of processes (with
``--resume_override``: each process draws its own random numbers, so that resume is not exact; the tests
resume on the same number only). DCP keeps only
tensors here; everything else a checkpoint holds (step, data position, schedules, the optimiser's
hyperparameters, the run's config, each rank's RNG states) is in ``trainer.pt`` beside them, written by rank
0 and read with ``weights_only=True``. DCP's own index (``.metadata``) is a pickle, which
:class:`SafeReader` reads with an unpickler that admits only DCP's metadata records, refusing entries that
DCP would read with an unrestricted ``torch.load``: a checkpoint is data, never code.

:func:`consolidate` turns a ``last.dcp/`` folder into the single-file checkpoint any other run writes
(``last.pt``: loads into ``MagvitPipeline.from_checkpoint``, resumes a ``ddp`` or single-process run),
in one process, without building a model.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, TensorStorageMetadata

from magvit import checkpoint as ckpt
from magvit.errors import MagvitError

__all__ = ["PLAIN_FILE", "SafeReader", "consolidate", "flatten_layout", "is_sharded_checkpoint", "load_plain",
           "load_tensors", "resume_folder", "save_sharded", "shard", "shard_units"]

#: the non-tensor part of a sharded checkpoint, inside its folder
PLAIN_FILE = "trainer.pt"


# -- sharding ------------------------------------------------------------------------------------------


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The submodules ``module`` asks to be sharded on their own (its ``shard_units()``, else none), in the
    order they run."""
    units = getattr(module, "shard_units", None)
    return list(units()) if callable(units) else []


def shard(module: nn.Module) -> nn.Module:
    """``fully_shard`` each of ``module``'s :func:`shard_units`, then ``module`` itself (in place; returned for
    convenience). Needs an initialised process group; the module must be on its device already."""
    from torch.distributed.fsdp import fully_shard

    for unit in shard_units(module):
        fully_shard(unit)
    fully_shard(module)
    return module


# -- sharded checkpoints -------------------------------------------------------------------------------


class _MetadataUnpickler(pickle.Unpickler):
    """Admits the records DCP's index is made of, and nothing that could run code."""

    _ALLOWED = {
        *(("torch.distributed.checkpoint.metadata", name) for name in (
            "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
            "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING")),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.serialization", "_get_layout"),  # a layout by its name ("torch.strided")
        ("torch", "Size"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")


class SafeReader(dcp.FileSystemReader):
    """DCP's file reader with its index read by :class:`_MetadataUnpickler`; an index that lists a
    non-tensor entry (which DCP would read with an unrestricted ``torch.load``) is refused."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self.path) / ".metadata"
        try:
            metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
            raise MagvitError(f"{path.parent} is not a readable sharded checkpoint ({exc})") from None
        if not isinstance(metadata, Metadata):
            raise MagvitError(f"{path} is not a sharded checkpoint index")
        foreign = [k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)]
        if foreign:
            raise MagvitError(f"{path.parent} holds non-tensor entries ({foreign[0]}, ...); a magvit sharded "
                              "checkpoint holds tensors only")
        metadata.storage_meta = getattr(metadata, "storage_meta", None)
        if metadata.storage_meta is not None:
            metadata.storage_meta.load_id = self.load_id
        return metadata


def is_sharded_checkpoint(folder: str | os.PathLike[str]) -> bool:
    folder = Path(folder)
    return (folder / ".metadata").is_file() and (folder / PLAIN_FILE).is_file()


def save_sharded(tensors: dict[str, Any], plain: dict[str, Any], folder: Path, rank: int) -> None:
    """Write a sharded checkpoint to ``folder`` (every rank calls it with its own shards).

    Written beside it first (``folder.partial``) and swapped in by rank 0 when every rank has finished, so
    ``folder`` always holds a complete checkpoint (a kill during the swap leaves the previous one as
    ``folder.old``, which :func:`resume_folder` finds).
    """
    partial, old = folder.with_name(folder.name + ".partial"), folder.with_name(folder.name + ".old")
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier()
    dcp.save(tensors, storage_writer=dcp.FileSystemWriter(partial))
    if rank == 0:
        ckpt.save_atomic(plain, partial / PLAIN_FILE)
    _barrier()
    if rank == 0:
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(partial, folder)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def resume_folder(folder: Path) -> Path | None:
    """The complete sharded checkpoint at ``folder`` (or the previous one a kill left as ``folder.old``)."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if is_sharded_checkpoint(candidate):
            return candidate
    return None


def load_plain(folder: Path) -> dict[str, Any]:
    """The non-tensor part of a sharded checkpoint (``weights_only``)."""
    return ckpt.load(folder / PLAIN_FILE)


def load_tensors(template: dict[str, Any], folder: Path) -> None:
    """Fill ``template`` (the nested state dicts of this run, sharded as this run shards them) in place
    from the sharded checkpoint in ``folder``; DCP reshards when the number of processes changed."""
    try:
        dcp.load(template, storage_reader=SafeReader(folder))
    except MagvitError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        raise MagvitError(f"{folder} does not hold this run's tensors ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else exc})") from None


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# -- consolidation -------------------------------------------------------------------------------------


def consolidate(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The single-file checkpoint (the ``last.pt`` layout of :meth:`magvit.train.trainer.Trainer.state`) of
    the sharded checkpoint in ``folder``, read in this process alone.

    Raises:
        MagvitError: ``folder`` is not a complete sharded checkpoint.
    """
    folder = Path(folder)
    if not is_sharded_checkpoint(folder):
        raise MagvitError(f"{folder} is not a sharded checkpoint (a last.dcp folder written by `magvit fit "
                          "--trainer.strategy fsdp`, holding .metadata and trainer.pt)")
    plain = load_plain(folder)
    metadata = SafeReader(folder).read_metadata()
    flat = {key: torch.empty(meta.size, dtype=meta.properties.dtype)
            for key, meta in metadata.state_dict_metadata.items() if isinstance(meta, TensorStorageMetadata)}
    with warnings.catch_warnings():  # DCP warns that it loads in one process, which is what is asked
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(flat, storage_reader=SafeReader(folder), no_dist=True)
    nested = _unflatten(flat, plain["sharded"])
    state = {k: v for k, v in plain.items() if k not in ("sharded", "param_groups", "format")}
    state["models"], state["ema"] = nested["models"], nested["ema"]
    state["optimizers"] = {name: _indexed_optimizer_state(nested["optimizers"].get(name, {}), groups)
                           for name, groups in plain["param_groups"].items()}
    return state


def _unflatten(flat: dict[str, torch.Tensor], layout: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
    """``{part: {phase: {key: tensor}}}`` from DCP's dotted keys, using the layout recorded at save
    (``{part: {phase: [keys]}}``): parameter names hold dots themselves, so the split is looked up, not guessed."""
    out: dict[str, Any] = {}
    for part, phases in layout.items():
        out[part] = {}
        for phase, keys in phases.items():
            prefix = f"{part}.{phase}."
            out[part][phase] = {key: flat[prefix + key] for key in keys}
    if "optimizers" in out:  # optimiser keys are "state.<parameter>.<statistic>"
        for phase, entries in out["optimizers"].items():
            per_param: dict[str, dict[str, torch.Tensor]] = {}
            for key, value in entries.items():
                name, stat = key[len("state."):].rsplit(".", 1)
                per_param.setdefault(name, {})[stat] = value
            out["optimizers"][phase] = per_param
    return out


def _indexed_optimizer_state(per_param: dict[str, dict[str, torch.Tensor]],
                             param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    """``torch.optim.Optimizer.state_dict()``'s layout (parameters numbered in group order) from the
    parameter-name layout of ``get_optimizer_state_dict``."""
    groups, state, index = [], {}, 0
    for group in param_groups:
        ids = []
        for name in group["params"]:
            if name in per_param:
                state[index] = per_param[name]
            ids.append(index)
            index += 1
        groups.append({**group, "params": ids})
    return {"state": state, "param_groups": groups}


def flatten_layout(tensors: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, list[str]]]:
    """The keys of each ``{part: {phase: state}}`` entry as DCP flattens them (optimiser state nested one
    level deeper: ``state.<parameter>.<statistic>``), recorded at save for :func:`_unflatten`."""
    layout: dict[str, dict[str, list[str]]] = {}
    for part, phases in tensors.items():
        layout[part] = {}
        for phase, state in phases.items():
            if part == "optimizers":
                layout[part][phase] = [f"state.{name}.{stat}" for name, stats in state["state"].items()
                                       for stat in stats]
            else:
                layout[part][phase] = list(state)
    return layout
