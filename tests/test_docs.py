"""The shipped code, configs and docs cite only what a reader of the repository can open."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Files outside the repository: the paper and the authors' code (``videogvt/...``) are cited instead.
OUTSIDE = ("DESIGN.md", "../shared", "magvit_official")


def _repository_files(*paths: str) -> list[Path]:
    """Tracked files and new files not ignored by .gitignore, under ``paths``."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_no_citation_of_files_outside_the_repository():
    files = _repository_files("magvit", "docs", "configs", "README.md")
    assert any(f.name == "README.md" for f in files) and any(f.suffix == ".py" for f in files)
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, weights
            continue
        for number, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{number}: {word}" for word in OUTSIDE if word in line]
    assert not hits, "\n".join(hits)
