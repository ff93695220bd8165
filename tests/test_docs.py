"""The shipped code, configs and docs cite only what a reader of the repository can open: every Markdown file
they name is in the repository, and no path climbs out of it. Their Python examples run as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = re.compile(r"[A-Za-z0-9_./-]+\.md\b")


def _repository_files(*paths: str) -> list[Path]:
    """Tracked files and new files not ignored by .gitignore, under ``paths``."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def _known(repository: set[str]) -> set[str]:
    """How a repository file may be named: its path, or its file name alone."""
    return repository | {Path(p).name for p in repository}


def _cited_outside(line: str, known: set[str]) -> list[str]:
    """What ``line`` cites that is not in the repository: a path with ``../``, or a Markdown file that no
    repository path or file name in ``known`` matches."""
    bad = [m for m in MARKDOWN.findall(line) if m.lstrip("./") not in known]
    return bad + (["../"] if "../" in line else [])


#: Markdown files the commands write (outputs, not documents of the repository): `magvit ablate`'s report.
WRITTEN_BY_COMMANDS = {"report.md"}


def test_no_citation_of_files_outside_the_repository():
    known = _known({str(f.relative_to(ROOT)) for f in _repository_files(".")}) | WRITTEN_BY_COMMANDS
    files = _repository_files("magvit", "docs", "configs", "README.md")
    assert any(f.name == "README.md" for f in files) and any(f.suffix == ".py" for f in files)
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, weights
            continue
        for number, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{number}: {bad}" for bad in _cited_outside(line, known)]
    assert not hits, "\n".join(hits)


def test_the_check_finds_a_file_outside_the_repository():
    known = _known({"README.md", "docs/reliability.md", "magvit/cli.py"})
    assert _cited_outside("see docs/reliability.md and README.md", known) == []
    assert _cited_outside("the team's notes (NOTES.md)", known) == ["NOTES.md"]
    assert _cited_outside("as in ../elsewhere/spec.txt", known) == ["../"]


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file."""
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


DOCS_WITH_CODE = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if python_blocks(p)]


@pytest.mark.parametrize("path", DOCS_WITH_CODE, ids=lambda p: p.name)
def test_python_blocks_run_as_printed(path, tmp_path):
    """Each Python example of the README and docs/ runs as printed, in an empty folder."""
    for block in python_blocks(path):
        proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0, f"{path.name}: example failed\n{block}\n{proc.stderr[-3000:]}"
