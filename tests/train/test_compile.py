"""``--trainer.compile``: the trained module runs through ``torch.compile`` (inductor on the CPU) and a step's
loss stays what it is without it, within floating-point tolerance."""

import pytest
import torch

from magvit.train.data import DataConfig, make_data
from magvit.train.distributed import DistInfo
from magvit.train.trainer import Trainer, TrainerConfig
from magvit.train.transformer_stage import TransformerStage

TRANSFORMER = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "mlp_dim": 128, "dropout": 0.1,
               "attention_dropout": 0.1}


def _losses(tiny_data, tokenizer_checkpoint, out, compile_: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    stage = TransformerStage(str(tokenizer_checkpoint), preset="tiny", num_classes=8, tasks=["fp", "ipc", "cfp"],
                             frames=8, resolution=32, transformer_options=TRANSFORMER)
    cfg = TrainerConfig(max_steps=3, log_every=1, out_dir=str(out), progress=False, tensorboard=False,
                        compile=compile_)
    trainer = Trainer(stage, make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), DistInfo()), cfg)
    history = trainer.fit()
    return [row["transformer/loss"] for row in history], stage.transformer.state_dict()


def test_compiled_training_reaches_the_same_losses(tiny_data, tokenizer_checkpoint, tmp_path):
    eager, eager_weights = _losses(tiny_data, tokenizer_checkpoint, tmp_path / "eager", False)
    compiled, compiled_weights = _losses(tiny_data, tokenizer_checkpoint, tmp_path / "compiled", True)
    assert compiled == pytest.approx(eager, rel=1e-5)
    # the checkpoint keeps the module's own parameter names (compiling wraps, it does not rename)
    saved = torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["models"]["transformer"]
    assert saved.keys() == eager_weights.keys()
    for name, w in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], w, atol=1e-5, rtol=1e-4)
