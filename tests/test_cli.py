"""The `magvit` command line: listing commands and one-line user errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from magvit.cli import main
from tests.helpers.cli import one_line_error


def test_tasks_table(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "prompt", "uses_class", "needs_video", "plugin"]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows["cg"][1:4] == ["cg", "True", "False"]
    assert rows["fp"][4] == "magvit.tasks"
    assert rows["tsr"][4] == "tsr" and "magvit-tsr" in " ".join(rows["tsr"])


def test_plugins_lists_sources(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "magvit.tasks" in out and "task:fp" in out and "mask scheduler:cosine" in out
    assert "tsr" in out and "task:tsr" in out
    assert "magvit.pretrained" in out and "pipeline:demo" in out


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "magvit.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "tasks" in res.stdout and "plugins" in res.stdout


def test_weights_takes_the_name_as_printed(monkeypatch, tmp_path, capsys):
    calls = []

    def fake_fetch_i3d(cache_dir=None, *, force=False):  # nothing is downloaded
        calls.append((cache_dir, force))
        return Path(cache_dir) / "i3d_k400.safetensors"

    monkeypatch.setattr("magvit.metrics.weights.fetch_i3d", fake_fetch_i3d)
    assert main(["weights", "i3d", "--force", "--cache_dir", str(tmp_path)]) == 0
    assert calls == [(str(tmp_path), True)]
    assert capsys.readouterr().out.strip() == str(tmp_path / "i3d_k400.safetensors")


def test_weights_unknown_name_lists_the_available_ones(capsys):
    assert main(["weights", "nope"]) == 2
    one_line_error(capsys, "'nope'", "available: i3d")


def test_weights_help_shows_the_positional_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert usage.split()[-1] == "name" and "--cache_dir" in usage and "--force" in usage


def test_version_prints_the_installed_version_without_torch():
    from importlib.metadata import version

    code = "import sys; from magvit.cli import main; rc = main(['--version']); print(rc, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"magvit {version('magvit')}", "0 False"]
