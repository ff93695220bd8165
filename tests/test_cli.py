"""The `magvit` command line: listing commands and one-line user errors."""

import subprocess
import sys

from magvit.cli import main


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


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "magvit.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "tasks" in res.stdout and "plugins" in res.stdout
