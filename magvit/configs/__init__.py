"""The YAML configs shipped with magvit, and their lookup by name.

The files live in this package (``magvit/configs/<group>/<name>.yaml``; a clone also reaches them as
``configs/``), so an installed wheel has them too. A config is named by its path below this folder without
the extension: ``tiny/tokenizer``, ``transformer/bair_8task_B``, ``data/ucf101``.

``magvit fit --config X`` reads ``X`` as a file when one exists there; otherwise, when ``X`` names a shipped
config (``tiny/tokenizer``, ``tiny/tokenizer.yaml`` or ``configs/tiny/tokenizer.yaml``), the shipped file is
used, so the commands of the README work from any folder and from an installed package.
"""

from __future__ import annotations

import difflib
from importlib.resources import files
from pathlib import Path

import attrs

from magvit.errors import MagvitError

SUFFIX = ".yaml"


def config_dir() -> Path:
    """The folder of the shipped configs (inside the installed package)."""
    return Path(str(files(__name__)))


@attrs.frozen
class ShippedConfig:
    """One shipped config: its name, its file and the first line of its header comment."""

    name: str
    path: Path
    summary: str


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if not (text := line.strip()).startswith("#"):
            break
        if text := text.lstrip("#").strip():
            # the header's first clause; the parenthesised source and the details follow in the file
            return text.split(" (")[0].split(". ")[0].rstrip(".:")
    return ""


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped config, sorted by name."""
    root = config_dir()
    paths = sorted(root.rglob(f"*{SUFFIX}"))
    return [ShippedConfig(p.relative_to(root).with_suffix("").as_posix(), p, _summary(p)) for p in paths]


def _as_name(value: str) -> str:
    name = value.replace("\\", "/").strip("/")
    if name.startswith("configs/"):
        name = name[len("configs/") :]
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def resolve_config(value: str) -> str:
    """``value`` when it is an existing file, else the path of the shipped config it names.

    Raises:
        MagvitError: no such file and no shipped config of that name (the message lists the close ones).
    """
    if Path(value).is_file():
        return value
    name = _as_name(value)
    shipped = {c.name: c.path for c in shipped_configs()}
    if name in shipped:
        return str(shipped[name])
    if Path(value).exists():
        raise MagvitError(f"--config {value!r} is a folder: pass a YAML file or a shipped config name")
    close = difflib.get_close_matches(name, shipped, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise MagvitError(f"--config {value!r}: no such file, and no shipped config of that name{hint} "
                      "(`magvit configs` lists the shipped ones)")
