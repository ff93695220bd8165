"""Speed-up of training the transformer from token shards over tokenising on the fly.

One run, interleaved: the same :class:`~magvit.train.transformer_stage.TransformerStage` configuration is
built twice, once reading clip shards (the paper's recipe: the frozen encoder tokenises the clip and the
step task's condition video at every step, as the authors' trainer) and once reading token shards written by
:func:`magvit.train.tokenize.tokenize_shards`. Training steps (data read, loss, backward, AdamW step)
alternate between the two, so machine noise hits both alike; the result is the ratio of clips/s.
Weights are random (speed does not depend on them). The one-off tokenisation time is reported too.

    python -m benchmarks.token_cache --quick          # tiny presets, seconds
    python -m benchmarks.token_cache --steps 2        # B presets at 128 px (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from magvit import checkpoint as ckpt
from magvit import registry
from magvit.data import write_synthetic
from magvit.kernels.malloc import keep_freed_memory
from magvit.train.data import DataConfig, make_data
from magvit.train.distributed import DistInfo
from magvit.train.optim import make_optimizer
from magvit.train.stage import StepContext
from magvit.train.tokenize import tokenize_shards
from magvit.train.transformer_stage import TransformerStage

FRAMES = 16


def _random_tokenizer_checkpoint(preset: str, resolution: int, path: Path) -> Path:
    """A tokenizer-stage checkpoint of a randomly initialised 3D-VQ (what ``load_tokenizer`` reads)."""
    tokenizer = registry.get_tokenizer("vq3d", preset=preset, resolution=resolution)
    spec = {"name": "vq3d", "config": dict(tokenizer.config)}
    state = {"stage": "tokenizer", "model_config": {"tokenizer": spec}, "models": {"generator": tokenizer.state_dict()},
             "ema": {}}
    return ckpt.save_atomic(state, path)


def _batches(stage: TransformerStage, cfg: DataConfig) -> Iterator[Any]:
    stream = make_data(cfg, DistInfo(), stage)
    epoch = 0
    while True:
        yield from stream(epoch)
        epoch += 1


def token_cache_speedup(preset: str = "B", resolution: int = 128, batch_size: int = 2, steps: int = 3,
                        tasks: str = "fp,opc", warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Clips/s of transformer training from token shards divided by clips/s with on-the-fly tokenisation.

    Args:
        preset: tokenizer and transformer preset (``"B"``; ``"tiny"`` for a quick check).
        resolution: clip height and width (16 frames).
        batch_size: clips per step.
        steps: measured steps per mode (after ``warmup`` unmeasured ones), interleaved.
        warmup: unmeasured steps per mode; two, as in :mod:`benchmarks.train_step`: the first creates the
            optimiser state and the second is still slower while the heap grows around it.
        tasks: the configured tasks; every task but cg costs the same encoder passes on the fly.
    """
    torch.manual_seed(seed)
    keep_freed_memory()  # as `magvit fit` does on the CPU (magvit/kernels/malloc.py)
    with tempfile.TemporaryDirectory(prefix="magvit-token-bench-") as tmp:
        root = Path(tmp)
        # One batch per epoch: the stream cycles over the same clips (reading cost is per step either way).
        write_synthetic(root / "clips", num_clips=batch_size, num_val_clips=1, frames=FRAMES, size=resolution,
                        num_classes=8, seed=seed)
        checkpoint = _random_tokenizer_checkpoint(preset, resolution, root / "tokenizer.pt")
        t0 = time.perf_counter()
        tokenize_shards(checkpoint, root / "clips" / "train", root / "tokens", tasks=tasks, batch_size=batch_size,
                        device="cpu")
        tokenize_s = time.perf_counter() - t0

        common = {"tokenizer_checkpoint": str(checkpoint), "preset": preset, "tasks": tasks, "frames": FRAMES,
                  "resolution": resolution, "num_classes": 8, "seed": seed}
        modes = {"on_the_fly": TransformerStage(**common),
                 "token_shards": TransformerStage(**common, token_shards=str(root / "tokens"))}
        cfg = DataConfig(train=str(root / "clips" / "train"), batch_size=batch_size, shuffle_buffer=batch_size)
        runs = {}
        for name, stage in modes.items():
            model = stage.transformer.train()
            runs[name] = (stage, model, make_optimizer(model, stage.optim), _batches(stage, cfg))
        seconds = dict.fromkeys(modes, 0.0)
        for step in range(warmup + steps):
            for name, (stage, model, optimizer, batches) in runs.items():
                t0 = time.perf_counter()
                batch = next(batches)
                optimizer.zero_grad(set_to_none=True)
                loss, _ = stage.loss("transformer", model, batch, StepContext(step, torch.Generator().manual_seed(step)))
                loss.backward()
                optimizer.step()
                if step >= warmup:
                    seconds[name] += time.perf_counter() - t0
    rates = {name: steps * batch_size / s for name, s in seconds.items()}
    return {
        "preset": preset, "resolution": resolution, "frames": FRAMES, "batch_size": batch_size, "steps": steps,
        "tasks": tasks, "clips_per_s_on_the_fly": rates["on_the_fly"], "clips_per_s_token_shards": rates["token_shards"],
        "speedup": rates["token_shards"] / rates["on_the_fly"], "tokenize_s": tokenize_s,
        "tokenize_clips_per_s": batch_size / tokenize_s if not math.isclose(tokenize_s, 0) else float("inf"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny presets at 32 px (a functional check)")
    p.add_argument("--preset", default="B")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tasks", default="fp,opc")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.resolution, args.batch_size, args.steps = "tiny", 32, 4, 5
    result = token_cache_speedup(args.preset, args.resolution, args.batch_size, args.steps, args.tasks, args.warmup)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
