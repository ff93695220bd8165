"""The configuration of a training run: parsed from a YAML config and overrides as `magvit fit` parses it."""

from __future__ import annotations

import json

import pytest

from magvit.configs import config_dir
from magvit.errors import InputError, MagvitError
from magvit.train.fit_config import FitConfig, fit_parser, instantiate_fit, parse_fit_config, setting_key
from magvit.train.settings import DataConfig, SettingError, TrainerConfig
from magvit.train.tokenizer_stage import TokenizerStage
from tests.train.conftest import FRAMES, SIZE

TRANSFORMER = config_dir() / "tiny" / "transformer.yaml"


def _dump(parser, namespace) -> dict:
    return json.loads(parser.dump(namespace, format="json", skip_unset=False))


def test_overrides_apply_after_the_file_as_options_after_config_do():
    parser = fit_parser()
    plain = parse_fit_config("tiny/transformer", parser=parser)  # a shipped name resolves to its file
    assert plain.data.batch_size == 16 and plain.trainer.max_steps == 24000 and plain.resume is False
    overrides = {"data.batch_size": 4, "trainer.max_steps": 2, "resume": True,
                 "model.init_args.token_shards": "tokens", "model.init_args.transformer_options": {"num_layers": 1}}
    settings = parse_fit_config(TRANSFORMER, overrides, parser)
    assert settings.data.batch_size == 4 and settings.trainer.max_steps == 2 and settings.resume is True
    assert settings.model.init_args.token_shards == "tokens" and settings.model.init_args.num_classes == 8
    # exactly what `magvit fit --config FILE --data.batch_size 4 ...` records in its checkpoints
    argv = ["--config", str(TRANSFORMER), "--data.batch_size", "4", "--trainer.max_steps", "2", "--resume", "true",
            "--model.init_args.token_shards", "tokens", "--model.init_args.transformer_options", '{"num_layers": 1}']
    assert _dump(parser, settings) == _dump(parser, parser.parse_args(argv))


def test_a_bad_key_or_value_is_one_input_error_naming_the_config():
    with pytest.raises(InputError, match=r"transformer.yaml: .*does not accept option 'bogus'"):
        parse_fit_config(TRANSFORMER, {"trainer.bogus": 1})
    with pytest.raises(InputError, match=r'Parser key "data.batch_size"'):
        parse_fit_config(TRANSFORMER, {"data.batch_size": "four"})
    with pytest.raises(MagvitError, match="no such file, and no shipped config of that name"):
        parse_fit_config("tiny/transformr")


def test_instantiate_builds_the_stage_and_names_a_refused_setting_by_its_key(tiny_data, tmp_path):
    overrides = {"data.train": str(tiny_data / "train"), "trainer.out_dir": str(tmp_path),
                 "model.init_args.resolution": SIZE, "model.init_args.frames": FRAMES}
    parser = fit_parser()
    config = instantiate_fit(parse_fit_config("tiny/tokenizer", overrides, parser), parser)
    assert isinstance(config, FitConfig) and isinstance(config.model, TokenizerStage)
    assert isinstance(config.data, DataConfig) and config.data.batch_size == 8
    assert isinstance(config.trainer, TrainerConfig) and config.trainer.out_dir == str(tmp_path)
    assert config.run_config["trainer"]["out_dir"] == str(tmp_path) and config.run_config["resume"] is False
    assert config.run_config["model"]["init_args"]["frames"] == FRAMES and config.device is None
    with pytest.raises(SettingError) as refused:
        instantiate_fit(parse_fit_config("tiny/tokenizer", {**overrides, "trainer.max_steps": 0}, parser), parser)
    assert setting_key(refused.value) == "trainer.max_steps"
    with pytest.raises(SettingError) as refused:
        instantiate_fit(parse_fit_config("tiny/tokenizer", {**overrides, "model.init_args.optim.lr": 0.0}, parser),
                        parser)
    assert setting_key(refused.value) == "model.init_args.optim.lr"


def test_resume_override_needs_resume(tiny_data, tmp_path):
    stage = TokenizerStage(preset="tiny", resolution=SIZE, frames=FRAMES)
    data, trainer = DataConfig(train=str(tiny_data / "train")), TrainerConfig(out_dir=str(tmp_path))
    with pytest.raises(MagvitError, match="--resume_override accepts changed settings of a resumed run: pass --resume"):
        FitConfig(model=stage, data=data, trainer=trainer, resume_override=True)
    assert FitConfig(model=stage, data=data, trainer=trainer, resume=True, resume_override=True).run_config == {}
