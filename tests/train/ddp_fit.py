"""Run under ``torchrun --nproc_per_node 2``: train the tiny transformer stage with DDP, then save each
rank's final weights (``rank<r>.pt``) and its first batch's sample keys so the test can compare replicas."""

import sys
from pathlib import Path

import torch

from magvit.train import distributed
from magvit.train.data import DataConfig, make_data
from magvit.train.trainer import Trainer, TrainerConfig
from magvit.train.transformer_stage import TransformerStage


def main(data: str, tokenizer: str, out: str) -> None:
    info = distributed.setup("cpu")
    stage = TransformerStage(
        tokenizer, preset="tiny", num_classes=8, tasks=["fp", "ipc", "cfp"], frames=8, resolution=32,
        transformer_options={"num_layers": 2, "hidden_size": 64, "num_heads": 2, "mlp_dim": 128},
    )
    data_fn = make_data(DataConfig(train=data, batch_size=2, batches_per_epoch=4), info)
    keys = list(next(iter(data_fn(0))).keys)
    cfg = TrainerConfig(max_steps=3, log_every=1, out_dir=out, progress=False, tensorboard=False)
    Trainer(stage, data_fn, cfg, info).fit()
    torch.save({"weights": stage.transformer.state_dict(), "keys": keys}, Path(out) / f"rank{info.rank}.pt")
    distributed.teardown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
