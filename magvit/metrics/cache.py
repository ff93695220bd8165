"""Where converted pretrained weight files live on this machine.

The default folder is ``~/.cache/magvit``; the environment variable ``MAGVIT_CACHE`` names another one.
Weights never live in the repository: they are data, loaded from a local path.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MAGVIT_CACHE"
I3D_FILENAME = "i3d_k400.safetensors"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The weights folder: ``override`` if given, else ``$MAGVIT_CACHE``, else ``~/.cache/magvit``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "magvit"


def default_i3d_path(override: str | os.PathLike[str] | None = None) -> Path:
    """Path of the converted Kinetics-400 I3D weights (``i3d_k400.safetensors`` in :func:`cache_dir`)."""
    return cache_dir(override) / I3D_FILENAME
