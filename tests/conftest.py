"""Shared fixtures. Nothing in the suite may reach a hub."""

import os
import textwrap
from importlib.metadata import EntryPoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def ramp_video(batch: int, frames: int, size: int) -> torch.Tensor:
    """A video whose every pixel value encodes its (b, c, t, y, x) position, so region checks are exact.

    value = (((b * 3 + c) * T + t) * S + y) * S + x, scaled into [0, 1].
    """
    n = batch * 3 * frames * size * size
    return (torch.arange(n, dtype=torch.float64) / (n - 1)).view(batch, 3, frames, size, size)


@pytest.fixture
def ramp():
    return ramp_video


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """``write(module, body)``: a plugin module on ``sys.path`` and its ``"magvit"`` entry point."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, body: str) -> EntryPoint:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
        return EntryPoint(name=module, value=module, group="magvit")

    return write
