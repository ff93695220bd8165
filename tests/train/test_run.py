"""`magvit.train.fit`: one run from a config built in Python, refused over an existing run, resumed."""

from __future__ import annotations

import pytest

from magvit import checkpoint as ckpt
from magvit.errors import MagvitError
from magvit.train import FitConfig, FitResult, fit
from magvit.train.settings import DataConfig, TrainerConfig
from magvit.train.tokenizer_stage import TokenizerStage
from tests.train.conftest import FRAMES, SIZE


def _config(tiny_data, out, **kw) -> FitConfig:
    trainer = TrainerConfig(max_steps=1, log_every=1, out_dir=str(out), progress=False, tensorboard=False)
    return FitConfig(model=TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES),
                     data=DataConfig(train=str(tiny_data / "train"), batch_size=2), trainer=trainer,
                     device="cpu", run_config={"trainer": {"max_steps": 1}}, **kw)


def test_fit_trains_refuses_to_overwrite_and_resumes(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    result = fit(_config(tiny_data, out))
    assert result == FitResult(step=1, checkpoint=out / "last.pt", trained=True, is_main=True)
    saved = ckpt.load(out / "last.pt")
    assert saved["step"] == 1 and saved["stage"] == "tokenizer" and saved["run_config"] == {"trainer": {"max_steps": 1}}

    with pytest.raises(MagvitError, match="last.pt already exists: pass --resume"):
        fit(_config(tiny_data, out))
    again = fit(_config(tiny_data, out, resume=True))
    assert again == FitResult(step=1, checkpoint=out / "last.pt", trained=False, is_main=True)
    assert f"resuming from {out / 'last.pt'} at step 1" in capsys.readouterr().err
