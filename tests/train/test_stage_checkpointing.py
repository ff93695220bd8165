"""The stages' ``activation_checkpointing`` flag: from ``magvit fit``'s command line to the model's option and the
checkpoint's config, next to the stage's other model options."""

from __future__ import annotations

import pytest

from magvit.configs import config_dir
from magvit.pipeline import MagvitPipeline
from magvit.train.fit_config import fit_parser, instantiate_fit, parse_fit_config
from magvit.train.settings import SettingError, with_activation_checkpointing
from magvit.train.tokenizer_stage import TokenizerStage
from magvit.train.transformer_stage import TransformerStage
from tests.train.conftest import FRAMES, SIZE


def test_the_flag_turns_the_model_option_on_and_keeps_the_others():
    merged = with_activation_checkpointing(TokenizerStage, "tokenizer_options", {"entropy_weight": 0.0}, True)
    assert merged == {"entropy_weight": 0.0, "activation_checkpointing": True}
    assert with_activation_checkpointing(TokenizerStage, "tokenizer_options", None, False) == {}
    given = {"activation_checkpointing": True}
    assert with_activation_checkpointing(TokenizerStage, "tokenizer_options", given, False) == given
    with pytest.raises(SettingError, match=r"contradicts tokenizer_options.activation_checkpointing \(False\)"):
        with_activation_checkpointing(TokenizerStage, "tokenizer_options", {"activation_checkpointing": False}, True)
    with pytest.raises(SettingError, match="must be true or false"):
        with_activation_checkpointing(TransformerStage, "transformer_options", None, "yes")


def test_tokenizer_stage_flag_from_the_command_line_reaches_the_tokenizer(tiny_data, tmp_path):
    parser = fit_parser()
    base = ["--config", str(config_dir() / "tiny" / "tokenizer.yaml"), "--data.train", str(tiny_data / "train"),
            "--trainer.out_dir", str(tmp_path), "--model.init_args.frames", str(FRAMES),
            "--model.init_args.resolution", str(SIZE)]
    for extra in (["--model.init_args.activation_checkpointing", "true"],
                  ["--model.init_args.tokenizer_options.activation_checkpointing", "true"]):
        stage = instantiate_fit(parser.parse_args(base + extra), parser).model
        assert stage.tokenizer.config["activation_checkpointing"] is True
        assert stage.tokenizer.config["entropy_weight"] == 0.0  # the config file's other option is kept
        assert stage.model_config()["tokenizer"]["config"]["activation_checkpointing"] is True
    stage = instantiate_fit(parser.parse_args(base), parser).model
    assert stage.tokenizer.config["activation_checkpointing"] is False


def test_transformer_stage_flag_reaches_the_transformer_and_its_saved_config(tokenizer_checkpoint, tmp_path):
    overrides = {"model.init_args.tokenizer_checkpoint": str(tokenizer_checkpoint), "trainer.out_dir": str(tmp_path),
                 "model.init_args.frames": FRAMES, "model.init_args.resolution": SIZE,
                 "model.init_args.tasks": ["fp", "opc"], "model.init_args.activation_checkpointing": True}
    parser = fit_parser()
    stage = instantiate_fit(parse_fit_config("tiny/transformer", overrides, parser), parser).model
    assert stage.transformer.activation_checkpointing is True
    assert stage.transformer.config["hidden_size"] == 128  # the config file's transformer_options are kept
    assert stage.model_config()["transformer"]["activation_checkpointing"] is True
    pipe = stage.pipeline()
    pipe.save(tmp_path / "pipe.pt")
    assert MagvitPipeline.from_checkpoint(tmp_path / "pipe.pt").transformer.activation_checkpointing is True
    options = {"transformer_options": {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "mlp_dim": 64,
                                       "activation_checkpointing": True}}
    stage = TransformerStage(str(tokenizer_checkpoint), tasks=["fp"], frames=FRAMES, resolution=SIZE, **options)
    assert stage.transformer.config["activation_checkpointing"] is True
