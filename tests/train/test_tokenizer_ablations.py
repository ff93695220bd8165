"""The tokenizer ablations of paper Table 7 from the shipped configs: a 2D-VQ trained on sampled frames with a
per-frame discriminator, and a 3D-VQ initialised from it by inflation."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from magvit import checkpoint as ckpt
from magvit.errors import InputError, MagvitError
from magvit.pipeline import load_tokenizer
from magvit.train import FitConfig, fit
from magvit.train.distributed import DistInfo
from magvit.train.data import DataConfig, make_data
from magvit.train.fit_config import fit_parser, instantiate_fit, parse_fit_config
from magvit.train.init_from import InitFrom
from magvit.train.settings import SettingError
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.trainer import Trainer, TrainerConfig
from tests.train.conftest import FRAMES, SIZE


def _config(name: str, tiny_data, out, **overrides):
    """A shipped tiny config at the test data's size, quiet, writing to ``out``."""
    settings = {"data.train": str(tiny_data / "train"), "data.batch_size": 2, "trainer.out_dir": str(out),
                "trainer.progress": False, "trainer.tensorboard": False, "trainer.log_every": 1,
                "model.init_args.resolution": SIZE, "model.init_args.frames": FRAMES, "device": "cpu", **overrides}
    parser = fit_parser()
    return instantiate_fit(parse_fit_config(name, settings, parser), parser)


@pytest.fixture(scope="module")
def vq2d_checkpoint(tiny_data, tmp_path_factory):
    """tiny/tokenizer_2d trained for two steps, GAN on (so its discriminator is trained too)."""
    out = tmp_path_factory.mktemp("vq2d")
    fit(_config("tiny/tokenizer_2d", tiny_data, out, **{"trainer.max_steps": 2,
                                                        "model.init_args.discriminator_start_step": 0}))
    return out / "last.pt"


def _constant_clip() -> torch.Tensor:
    frame = torch.rand(1, 3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return frame.expand(1, 3, FRAMES, SIZE, SIZE).contiguous()


def test_central_inflation_from_the_config_reproduces_the_2d_vq_on_a_constant_clip(vq2d_checkpoint, tiny_data,
                                                                                    tmp_path, capsys):
    config = _config("tiny/tokenizer_inflated", tiny_data, tmp_path,
                     **{"model.init_args.init_from.checkpoint": str(vq2d_checkpoint)})
    stage = config.model
    assert "central inflation of the 2D-VQ" in capsys.readouterr().out
    vq2d, _ = load_tokenizer(vq2d_checkpoint)  # the 2D-VQ's EMA weights, the ones inflated
    vq3d = stage.tokenizer.eval()
    video = _constant_clip()
    with torch.no_grad():
        recon_2d, recon_3d = vq2d.eval()(video).recon, vq3d(video).recon
    assert (recon_3d - recon_2d).abs().max() < 1e-4
    assert torch.equal(vq3d.encode(video), vq2d.encode(video)[:, ::4])  # one 3D token row per 4 frames
    record = stage.extra_state()["init_from"]
    assert record["checkpoint"] == str(vq2d_checkpoint) and record["inflation"] == "central"
    assert record["generator"]["unmapped"] == [] and record["generator"]["inflated"] > 0
    # the discriminator is inflated too; 8 frames pool down to 1 in the tiny 3D discriminator, so all of it maps
    assert record["discriminator"]["unmapped"] == [] and record["discriminator"]["inflated"] > 0
    # the record reaches the checkpoint
    fit(FitConfig(model=stage, data=config.data, trainer=TrainerConfig(
        max_steps=1, out_dir=str(tmp_path), progress=False, tensorboard=False), device="cpu"))
    assert ckpt.load(tmp_path / "last.pt")["extra"]["init_from"] == record


def test_average_inflation_loads_and_unmapped_entries_are_named(vq2d_checkpoint, capsys):
    stage = TokenizerStage(preset="tiny", resolution=SIZE, frames=16,
                           init_from=InitFrom(str(vq2d_checkpoint), "average"))
    out = capsys.readouterr().out
    record = stage.extra_state()["init_from"]
    assert record["inflation"] == "average" and record["generator"]["unmapped"] == []
    # 16 frames pool to 2 in the tiny 3D discriminator: its dense layer cannot come from the per-frame one
    assert [name for name, _ in record["discriminator"]["unmapped"]] == ["dense.weight"]
    assert "left at their initialisation: discriminator.dense.weight (2D shape" in out
    w2 = load_tokenizer(vq2d_checkpoint)[0].encoder.conv_in.weight
    assert torch.allclose(stage.tokenizer.encoder.conv_in.weight.sum(2), w2, atol=1e-6)


def test_inflation_refuses_another_size_a_3d_source_a_2d_target_and_a_bad_mode(vq2d_checkpoint,
                                                                               tokenizer_checkpoint):
    with pytest.raises(MagvitError, match=r"does not have the 3D-VQ's size \(\d+ tensors: encoder.conv_in.weight"):
        TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES, tokenizer_options={"filters": 8},
                       init_from=InitFrom(str(vq2d_checkpoint)))
    with pytest.raises(MagvitError, match="holds a 'vq3d' tokenizer; inflation needs a per-frame 2D-VQ"):
        TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES, init_from=InitFrom(str(tokenizer_checkpoint)))
    with pytest.raises(MagvitError, match="the configured tokenizer 'vq2d' is not 3D"):
        TokenizerStage(tokenizer="vq2d", preset="tiny", resolution=SIZE, frames=FRAMES,
                       init_from=InitFrom(str(vq2d_checkpoint)))
    with pytest.raises(SettingError, match=r"InitFrom.inflation must be one of \['central', 'average'\]"):
        InitFrom(str(vq2d_checkpoint), "middle")


def test_2d_vq_with_a_per_frame_discriminator_on_sampled_frames_trains_from_the_config(tiny_data, tmp_path):
    config = _config("tiny/tokenizer_2d", tiny_data, tmp_path, **{
        "trainer.max_steps": 3, "model.init_args.discriminator_start_step": 0,
        "model.init_args.discriminator_options": {"spatial_dims": 2, "frames": 2}})
    stage = config.model
    assert stage.frames_per_clip == 4 and stage.judged_frames == 2 and stage.discriminator.spatial_dims == 2
    before = [p.detach().clone() for p in stage.discriminator.parameters()]
    fit(config)
    rows = {}
    with (tmp_path / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["name"], []).append(float(row["value"]))
    for name in ("g/loss", "g/adversarial", "d/loss", "d/r1", "d/adversarial"):
        assert len(rows[name]) == 3 and all(math.isfinite(v) for v in rows[name]), name
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(stage.discriminator.parameters(), before))
    assert moved > 0


def test_sampled_frames_come_from_the_step_generator_so_a_resumed_run_is_exact(tiny_data, tmp_path):
    def stage():
        return TokenizerStage(tokenizer="vq2d", preset="tiny", resolution=SIZE, frames=FRAMES, frames_per_clip=3,
                              discriminator_options={"spatial_dims": 2, "frames": 2}, discriminator_start_step=0)

    def trainer(out, steps):
        cfg = TrainerConfig(max_steps=4, log_every=1, ckpt_every=steps, out_dir=str(out), progress=False,
                            tensorboard=False)
        return Trainer(stage(), make_data(DataConfig(train=str(tiny_data / "train"), batch_size=2), DistInfo()), cfg)

    whole = trainer(tmp_path / "whole", 4)
    whole.fit()
    first = trainer(tmp_path / "split", 2)
    first.cfg = TrainerConfig(max_steps=2, out_dir=str(tmp_path / "split"), progress=False, tensorboard=False)
    first.fit()
    resumed = trainer(tmp_path / "split", 4)
    assert resumed.resume() and resumed.step == 2
    resumed.fit()
    for a, b in zip(whole.phases, resumed.phases):
        for (name, x), y in zip(a.module.state_dict().items(), b.module.state_dict().values()):
            assert torch.equal(x, y), name


def test_frame_options_are_checked():
    with pytest.raises(InputError, match="frames_per_clip samples frames for a per-frame tokenizer"):
        TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES, frames_per_clip=4)
    with pytest.raises(InputError, match=r"frames_per_clip must be an integer in \[1, frames = 8\]"):
        TokenizerStage(tokenizer="vq2d", preset="tiny", resolution=SIZE, frames=FRAMES, frames_per_clip=9)
    with pytest.raises(InputError, match="a 3D discriminator judges the whole 8-frame input"):
        TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES, discriminator_options={"frames": 4})
    with pytest.raises(InputError, match=r"discriminator_options.frames must be an integer in \[1, 4\]"):
        TokenizerStage(tokenizer="vq2d", preset="tiny", resolution=SIZE, frames=FRAMES, frames_per_clip=4,
                       discriminator_options={"spatial_dims": 2, "frames": 5})
    with pytest.raises(InputError, match="spatial_dims must be 3 .* or 2"):
        TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES, discriminator_options={"spatial_dims": 1})
