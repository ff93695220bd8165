"""The README's commands run as printed, in order, in an empty folder (as a newcomer would on a fresh clone).

Every line of a ```bash block that starts with ``magvit`` or ``torchrun`` is run with bash, exactly as
written (continuation lines joined), in one fresh working folder, so each line sees what the lines before
it wrote. Two lines are not run here: ``magvit weights i3d`` fetches a package from the network (the
conversion is tested in ``tests/metrics``), and the ``make`` targets are what runs this very suite.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_RUN = {"magvit weights i3d": "downloads the I3D package through pip (tests/metrics covers the conversion)"}


def readme_commands(text: str) -> list[str]:
    """The ``magvit``/``torchrun`` lines of the README's bash blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith(("magvit", "torchrun")):
                commands.append(command)
    return commands


def test_readme_commands_are_found():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert commands[0] == "magvit data synthetic --out data/synthetic --num_clips 64"
    assert ("magvit data tokenize --tokenizer_checkpoint outputs/tiny/tokenizer/last.pt --src data/synthetic/train "
            "--out data/synthetic/tokens") in commands
    assert any(c.startswith("torchrun ") for c in commands)
    assert "magvit weights i3d" in commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_command_sequence_runs_as_printed(tmp_path):
    """Each command exits 0 with no error line, in the README's order, from an empty folder outside the clone
    (so configs are found by name in the installed package, not as files of the clone)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MAGVIT_CACHE": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # torchrun's --master_port through its environment, so that a parallel run cannot collide
           "PET_MASTER_PORT": str(_free_port())}
    work = tmp_path / "work"
    work.mkdir()
    for command in readme_commands((ROOT / "README.md").read_text()):
        if command in NOT_RUN:
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0 and "magvit: error" not in proc.stderr, (
            f"README command failed: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    assert (work / "outputs/opc.gif").stat().st_size > 0
    assert (work / "outputs/eval/metrics.json").exists()
    assert (work / "data/mine/meta.json").exists()
    assert (work / "outputs/tiny/transformer_from_tokens/last.pt").exists()
    assert (work / "outputs/tiny/tokenizer_ddp/last.pt").exists()


@pytest.mark.parametrize("name", ["tiny/tokenizer", "tiny/transformer"])
def test_readme_configs_comments_name_runnable_commands(name):
    """The usage comments at the top of the tiny configs use the same names as the README."""
    from magvit.configs import config_dir

    header = [line for line in (config_dir() / f"{name}.yaml").read_text().splitlines() if line.startswith("#")]
    assert any(f"--config {name}" in line for line in header)
