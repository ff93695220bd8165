"""Reading weight files from untrusted sources as data, with one-line errors.

A ``torch.save`` file is a pickle, and a pickle is a program: :func:`load_torch_data` reads it with
``torch.load(weights_only=True)``, which builds tensors and plain containers only and refuses any other
Python object before it is created. A refused or unreadable file is a :class:`RefusedFileError` or a
:class:`~magvit.errors.MagvitError` naming the file and what was wrong with it. Torch's own message for a
refused file advises retrying with ``weights_only=False``, i.e. running the file's code: that advice is
never passed on. ``safetensors`` files hold tensors only; :func:`load_safetensors` gives its errors the
same shape.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any

import torch

from magvit.errors import MagvitError

__all__ = ["RefusedFileError", "load_safetensors", "load_torch_data", "state_dict_mismatch"]

# How torch's data-only unpickler names the global it refused ("GLOBAL posix.system ...").
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class RefusedFileError(MagvitError):
    """A weights file holds a pickle the data-only loader refused (code or Python objects)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text or "weights_only" in text[0]:  # never pass on advice to load a file as code
        return type(exc).__name__
    return f"{type(exc).__name__}: {text[0]}"


def _unreadable(what: str, name: str, exc: BaseException) -> MagvitError:
    return MagvitError(f"{what} {name!r} could not be read ({_first_line(exc)}); expected a complete file "
                       "written by torch.save")


def load_torch_data(path: str | os.PathLike[str], what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; every failure to read it is one :class:`MagvitError` line.

    Args:
        path: an existing file (the caller says what to do about a missing one).
        what: what the file is to the user ("checkpoint", "perceptual-loss weights"), for the messages.
        map_location: as for ``torch.load``.

    Raises:
        RefusedFileError: the pickle asks for Python objects other than tensors and plain data.
        MagvitError: the file is not a ``torch.save`` file or is corrupt/truncated.
        OSError: the file cannot be opened (permissions); the CLI prints it as one line.
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it did not write; the outcome says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(name, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise _unreadable(what, name, exc) from None
        found = _REFUSED_GLOBAL.search(str(exc))
        content = (f"it holds Python objects other than tensors and plain data (it asks for {found.group(1)}; "
                   if found else "it is a pickle other than torch.save's tensors and plain data (")
        raise RefusedFileError(
            f"{what} {name!r} could not be read: {content}refused: weights and checkpoints are loaded as data, never "
            "as code)"
        ) from None
    except (PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
        # What torch raises for a truncated zip, a foreign pickle or bytes that are not a pickle at all.
        raise _unreadable(what, name, exc) from None


def load_safetensors(path: str | os.PathLike[str], what: str) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file(path)`` with a one-line :class:`MagvitError` for a file that is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    name = os.fspath(path)
    try:
        return load_file(name)
    except SafetensorError as exc:
        raise MagvitError(f"{what} {name!r} is not a valid safetensors file ({_first_line(exc)}); "
                          "write it with safetensors.torch.save_file") from None


def state_dict_mismatch(own: dict[str, torch.Tensor], state: dict[str, Any]) -> str | None:
    """How ``state`` differs from a module's ``own`` state dict, in one line; ``None`` when it fits."""
    problems = []
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    shapes = sorted(k for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape)
    for keys, what in ((sorted(set(own) - set(state)), "missing keys"), (sorted(set(state) - set(own)), "unexpected keys"),
                       (not_tensors, "values that are not tensors"), (shapes, "shape mismatches")):
        if keys:
            problems.append(f"{len(keys)} {what} (e.g. {keys[0]!r})")
    return ", ".join(problems) or None
