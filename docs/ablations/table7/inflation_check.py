"""Why a centrally inflated 3D-VQ of table 7 can collapse: a check run beside the study, not part of it.

Part 1 (a few seconds): codebook use and held-out reconstruction PSNR of the seed's 2D-VQ, of a 3D-VQ
inflated from it (central and average, paper Sec. 3.1) *before any 3D training*, and of the three trained
3D-VQs of the study.

Part 2 (``--lr``; 100 steps of about 0.6 s each per rate on an idle machine): the first 100 steps of the study's ``vq3d_central`` run
(its recorded config; the schedule is the same 100-step warmup whatever ``max_steps``), once per learning
rate, through ``magvit fit``; the training log's perplexity and L2 every 10 steps.

    python docs/ablations/table7/inflation_check.py --out outputs/ablations --seed 0 --lr 1e-3 1e-4
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml

from magvit.data.reader import make_eval_loader
from magvit.metrics.reconstruction import evaluate_reconstruction
from magvit.pipeline import build_tokenizer, load_tokenizer, load_tokenizer_weights
from magvit.tokenizers.inflation import inflate_2d_to_3d
from magvit.tokenizers.quantizer import usage_stats


@attrs.define
class CodeRecorder:
    """A tokenizer that keeps the codes it encodes, so one reconstruction pass also gives the code histogram."""

    tokenizer: Any
    codes: list[torch.Tensor] = attrs.field(factory=list)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer.encode(video)
        self.codes.append(tokens.flatten())
        return tokens

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(tokens)


def describe(tokenizer, val: Path, name: str) -> None:
    recorder = CodeRecorder(tokenizer)
    psnr = evaluate_reconstruction(recorder, make_eval_loader(val, 8), fvd_extractor=None).scores.psnr
    # the perplexity and usage the training log records, over the held-out clips
    perplexity, usage = usage_stats(torch.cat(recorder.codes), tokenizer.codebook_size)
    used = round(float(usage) * tokenizer.codebook_size)
    print(f"| {name} | {used}/{tokenizer.codebook_size} | {float(perplexity):.1f} | {psnr:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ablations"))
    parser.add_argument("--seed", default="0")
    parser.add_argument("--lr", type=float, nargs="*", default=[])
    args = parser.parse_args()
    results = json.loads((args.out / "table7" / "results.json").read_text())
    run = {arm: results["arms"][arm][args.seed]["runs"]["tokenizer"] for arm in results["arms"]}
    checkpoint = {arm: args.out / "runs" / key / "last.pt" for arm, key in run.items()}
    config = json.loads(json.dumps(results["runs"][run["vq3d_central"]]["config"]).replace("OUT/", f"{args.out}/"))
    val = Path(config["data"]["train"]).parent / "val"

    print("| tokenizer | codes used on the held-out clips | perplexity | PSNR |\n|---|---|---|---|")
    source, _, _ = load_tokenizer_weights(checkpoint["vq2d"])
    describe(source, val, "2D-VQ, trained")
    _, spec_3d, _ = load_tokenizer_weights(checkpoint["vq3d"])
    for mode in ("central", "average"):
        tokenizer = build_tokenizer(spec_3d)
        inflate_2d_to_3d(source.state_dict(), tokenizer, mode)
        describe(tokenizer.eval(), val, f"3D-VQ, {mode} inflation, before training")
    for arm in ("vq3d", "vq3d_central", "vq3d_average"):
        describe(load_tokenizer(checkpoint[arm])[0], val, f"{arm}, trained")

    for lr in args.lr:
        with tempfile.TemporaryDirectory() as tmp:
            config["trainer"].update(max_steps=100, log_every=10, ckpt_every=1000, out_dir=f"{tmp}/run")
            config["model"]["init_args"]["optim"]["lr"] = lr
            (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(config))
            subprocess.run([Path(sys.executable).parent / "magvit", "fit", "--config", f"{tmp}/config.yaml"],
                           check=True, stdout=subprocess.DEVNULL)
            with open(f"{tmp}/run/metrics.csv") as f:
                rows = [r for r in csv.DictReader(f) if r["name"] in ("g/perplexity", "g/l2")]
        for name in ("g/perplexity", "g/l2"):
            print(f"lr {lr:g} {name}: " + " ".join(f"{r['step']}:{float(r['value']):.4g}" for r in rows
                                                   if r["name"] == name))


if __name__ == "__main__":
    main()
