"""Run under ``torchrun --nproc_per_node 2``: train a tiny stage with ``--trainer.strategy`` ddp or fsdp.

Arguments: ``STAGE STRATEGY DATA TOKENIZER OUT MAX_STEPS KILL_AFTER RESUME``. Rank 0 writes every logged row
to ``OUT/history-<n>.json`` (``n`` counts the launches in OUT). With ``KILL_AFTER > 0`` every process exits
at once after the checkpoint of that step, as a killed job would; ``RESUME`` 1 continues from the checkpoint.
"""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from magvit.train import distributed
from magvit.train.data import DataConfig, make_data
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.trainer import Trainer, TrainerConfig
from magvit.train.transformer_stage import TransformerStage

TRANSFORMER = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "mlp_dim": 128, "dropout": 0.1,
               "attention_dropout": 0.1}


def build(stage: str, tokenizer: str):
    if stage == "transformer":
        return TransformerStage(tokenizer, preset="tiny", num_classes=8, tasks=["fp", "ipc", "cfp"], frames=8,
                                resolution=32, transformer_options=TRANSFORMER)
    return TokenizerStage(preset="tiny", resolution=32, frames=8)


def main(stage: str, strategy: str, data: str, tokenizer: str, out: str, max_steps: str, kill_after: str,
         resume: str) -> None:
    info = distributed.setup("cpu")
    data_fn = make_data(DataConfig(train=data, batch_size=2, batches_per_epoch=4), info)
    cfg = TrainerConfig(max_steps=int(max_steps), log_every=1, ckpt_every=1, out_dir=out, progress=False,
                        tensorboard=False, strategy=strategy)
    trainer = Trainer(build(stage, tokenizer), data_fn, cfg, info, run_config={"trainer": {"strategy": strategy}})
    if resume == "1":
        assert trainer.resume(), "nothing to resume"
    if int(kill_after) > 0:
        save = trainer.save

        def save_then_die(final: bool = False) -> None:
            save(final)
            if trainer.step == int(kill_after):
                dist.barrier()
                os._exit(0)  # no clean-up, as a killed job

        trainer.save = save_then_die
    history = trainer.fit()
    if info.is_main:
        n = len(list(Path(out).glob("history-*.json")))
        Path(out, f"history-{n}.json").write_text(json.dumps(history))
    distributed.teardown()


if __name__ == "__main__":
    main(*sys.argv[1:9])
