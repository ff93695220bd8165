"""The built wheel is complete: installed in a separate venv, it trains from a shipped config by name and runs
the demo, outside the clone.

The wheel is built from a copy of the working tree with ``pip wheel`` (no build isolation: no download) and
installed with ``--no-deps`` into a new venv whose dependencies come from the test venv through a ``.pth``
line (a directory added that way has its own ``.pth`` files ignored, so the test venv's editable magvit
is not seen). Only the installed package is on the path when the commands run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a copy of the working tree leaves out: generated files anywhere, and the README's outputs at the top
ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
TOP_LEVEL = {".git", ".venv", "outputs", "build", "dist", "data", "my_videos"}


def _left_out(folder: str, names: list[str]) -> set[str]:
    top = set(names) & TOP_LEVEL if Path(folder) == ROOT else set()
    return top | ANYWHERE(folder, names)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_left_out, symlinks=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True, cwd=tmp)
    (found,) = (tmp / "dist").glob("magvit-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "test_venv_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    return env_dir


def _run(venv: Path, cwd: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MAGVIT_CACHE": str(cwd / "cache"), "PYTHONPATH": ""}
    proc = subprocess.run([str(venv / "bin" / "magvit"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"magvit {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_wheel_holds_the_configs_and_the_demo_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"magvit/configs/{p.relative_to(ROOT / 'magvit' / 'configs').as_posix()}"
               for p in (ROOT / "magvit" / "configs").rglob("*.yaml")}
    assert "magvit/configs/tiny/tokenizer.yaml" in shipped
    assert shipped <= names
    assert "magvit/assets/demo/pipeline.pt" in names


def test_installed_wheel_trains_from_a_config_name_and_runs_the_demo(venv, tmp_path):
    location = subprocess.run([str(venv / "bin" / "python"), "-c", "import magvit; print(magvit.__file__)"],
                              cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert location.startswith(str(venv))  # the installed copy, not the clone
    assert "tiny/tokenizer" in _run(venv, tmp_path, "configs")
    _run(venv, tmp_path, "data", "synthetic", "--out", "data/synthetic", "--num_clips", "16", "--num_val_clips", "8")
    assert "done: step 2" in _run(venv, tmp_path, "fit", "--config", "tiny/tokenizer", "--trainer.max_steps", "2")
    out = _run(venv, tmp_path, "demo", "--no_fvd", "--eval_clips", "8", "--train_clips", "16")
    assert (tmp_path / "outputs/demo/index.html").exists() and "index.html" in out
