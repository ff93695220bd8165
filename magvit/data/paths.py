"""Data paths are local files and folders, never URLs.

webdataset opens a shard "url" through its ``gopen`` table, in which ``pipe:CMD`` runs ``CMD`` in a shell
and ``http:``, ``s3:``, ``gs:``, ... reach the network. A data path is often written in a config file
that other people share, so a path that could run a command or download something is refused here, and
the reader opens shards with ``open`` itself (:func:`magvit.data.reader.shard_samples`) instead of handing
them to ``gopen``. Every data path magvit reads or writes passes :func:`local_path`: the clip and token
readers, ``data inspect``, ``data tokenize`` and ``data shards`` (source and output folders).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from magvit.errors import MagvitError

__all__ = ["local_path"]

# A URL scheme (RFC 3986: a letter, then letters, digits, "+", "-" or "."), then a colon. One letter is a
# scheme too: webdataset's gopen would take "c:shard.tar" as the unknown scheme "c".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def local_path(path: str | os.PathLike[str], what: str = "data path", *, use: str = "reads shards from") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it names a local file or folder (existing or not).

    ``what`` and ``use`` word the error: "{what} '...' is not a local file or folder: magvit {use} local
    paths only".

    Raises:
        MagvitError: ``path`` is a URL (``pipe:``, ``http:``, ``file:``, ...) or ``-`` (standard input).
    """
    text = os.fspath(path)
    if not isinstance(text, str) or text == "-" or _SCHEME.match(text):
        raise MagvitError(f"{what} {text!r} is not a local file or folder: magvit {use} local paths only")
    return Path(text)

