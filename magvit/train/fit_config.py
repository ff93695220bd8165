"""The configuration of a training run: the ``magvit fit`` parser, YAML configs with overrides, the built record.

``magvit fit`` and ``magvit demo --train`` read configs through the same parser (:func:`fit_parser`), so a run
started from either records the same settings in its checkpoints (``run_config``, compared on resume).
A config is parsed first (:func:`parse_fit_config`: plain values, nothing built) and then instantiated
(:func:`instantiate_fit`: the stage and the settings records, as a :class:`FitConfig` for
:func:`magvit.train.fit`).

Torch-free: ``magvit fit --help`` builds its parser from this module (the settings records and the ``Stage``
base class); a stage's own module is imported when its ``class_path`` is parsed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Mapping
from typing import Any

import attrs
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace

from magvit.configs import resolve_config
from magvit.errors import InputError, MagvitError
from magvit.train.settings import DataConfig, OptimConfig, SettingError, TrainerConfig
from magvit.train.stage import Stage

__all__ = ["FitConfig", "fit_parser", "instantiate_fit", "parse_fit_config", "setting_default", "setting_key"]


def fit_parser(exit_on_error: bool = True) -> ArgumentParser:
    """``magvit fit``: --config files composed in order, --model class_path, --data, --trainer.

    Args:
        exit_on_error: a bad argument or config value prints the usage and exits (argparse's way); False
            raises ``jsonargparse.ArgumentError`` instead (use from Python; ``magvit`` prints it as one line).
    """
    p = ArgumentParser(description="Train a stage with the shared trainer (single process or under torchrun).",
                       exit_on_error=exit_on_error)
    p.add_argument("--config", action=ActionConfigFile, help="YAML config; give several to compose them in order")
    p.add_argument("--model", type=Stage, required=True,
                   help="the stage: class_path magvit.train.tokenizer_stage.TokenizerStage or "
                        "magvit.train.transformer_stage.TransformerStage (or a plugin's)")
    p.add_class_arguments(DataConfig, "data")
    p.add_class_arguments(TrainerConfig, "trainer")
    p.add_argument("--resume", type=bool, nargs="?", const=True, default=False,
                   help="continue from trainer.out_dir/last.pt (`--resume` alone means true)")
    p.add_argument("--resume_override", type=bool, nargs="?", const=True, default=False,
                   help="with --resume: continue even though settings that change what the run computes (model, "
                        "optimiser, batch size, data, max_steps, ...) differ from the checkpoint's; the new values "
                        "apply and are recorded in trainer.out_dir/resume_overrides.log")
    p.add_argument("--device", type=str | None, default=None, help="cpu or cuda (default: cuda when available)")
    return p


def parse_fit_config(config: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None,
                     parser: ArgumentParser | None = None) -> Namespace:
    """The settings of ``magvit fit --config CONFIG`` followed by ``overrides``, parsed but not built.

    Args:
        config: a YAML file, or the name of a shipped config (``tiny/tokenizer``; ``magvit configs`` lists them).
        overrides: settings by dotted key, applied after the file as options after ``--config`` are
            (``{"trainer.out_dir": "runs/a", "data.batch_size": 4, "model.init_args.preset": "B"}``).
        parser: the parser to use (default: :func:`fit_parser` that raises rather than exits).

    Raises:
        MagvitError: no such file and no shipped config of that name.
        InputError: a key the parser does not know, or a value of the wrong type.
    """
    parser = parser or fit_parser(exit_on_error=False)
    path = resolve_config(os.fspath(config))
    try:
        namespace = parser.parse_path(path)
        return parser.parse_object(dict(overrides or {}), namespace=namespace)
    except ArgumentError as exc:
        raise InputError(f"{path}: {' '.join(str(exc).split())}") from None


@attrs.frozen
class FitConfig:
    """What :func:`magvit.train.fit` runs: the built stage and the settings of one training run.

    Attributes:
        model: the stage (the config's ``model.class_path`` built with its ``init_args``).
        data: training data settings.
        trainer: loop settings (``out_dir``, ``max_steps``, ...).
        resume: continue from ``trainer.out_dir/last.pt``.
        resume_override: with ``resume``, continue even though settings that change what the run computes
            differ from the checkpoint's (the changes are recorded in ``trainer.out_dir/resume_overrides.log``).
        device: ``cpu`` or ``cuda`` (None: CUDA when available).
        run_config: the whole configuration as plain data, saved in every checkpoint and compared on resume
            (empty: nothing to compare).

    Raises:
        MagvitError: ``resume_override`` without ``resume``.
    """

    model: Stage
    data: DataConfig
    trainer: TrainerConfig
    resume: bool = False
    resume_override: bool = False
    device: str | None = None
    run_config: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.resume_override and not self.resume:
            raise MagvitError("--resume_override accepts changed settings of a resumed run: pass --resume too")


def instantiate_fit(namespace: Namespace, parser: ArgumentParser | None = None) -> FitConfig:
    """Build the stage and the settings records of a parsed configuration (:func:`parse_fit_config`).

    Raises:
        SettingError: a setting out of range (:func:`setting_key` names its config key).
        MagvitError: the stage refuses its arguments (e.g. a missing tokenizer checkpoint).
    """
    parser = parser or fit_parser()
    built = parser.instantiate(namespace)
    # plain data for the checkpoint; None values are kept so that a resume sees every setting
    run_config = json.loads(parser.dump(namespace, format="json", skip_unset=False))
    return FitConfig(model=built.model, data=built.data, trainer=built.trainer, resume=bool(built.resume),
                     resume_override=bool(built.resume_override), device=built.device, run_config=run_config)


#: The config section of each settings record (a stage's own settings are under ``model.init_args``).
_SECTIONS: dict[type, str] = {TrainerConfig: "trainer", DataConfig: "data", OptimConfig: "model.init_args.optim"}


def setting_default(config: Mapping[str, Any], key: str) -> Any:
    """The default value of the setting at dotted ``key`` (``trainer.strategy``, ``model.init_args.frames``)
    of the run config ``config``: what a config written before the setting existed ran with.

    Raises:
        KeyError: the key is not a setting with a default (e.g. an entry of an options dict).
    """
    section, _, name = key.rpartition(".")
    for record, prefix in _SECTIONS.items():
        field = attrs.fields_dict(record).get(name) if section == prefix else None
        if field is not None and field.default is not attrs.NOTHING:
            return field.default
    class_path = (config.get("model") or {}).get("class_path") if section == "model.init_args" else None
    if isinstance(class_path, str):
        module, _, qualname = class_path.rpartition(".")
        try:
            stage = getattr(importlib.import_module(module), qualname)
            parameter = inspect.signature(stage).parameters.get(name)
        except (ImportError, AttributeError, ValueError, TypeError):
            parameter = None
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise KeyError(key)


def setting_key(error: SettingError) -> str | None:
    """The dotted config key of the setting ``error`` refused (``trainer.max_steps``), or None when the
    setting belongs to a record this parser does not place."""
    section = "model.init_args" if issubclass(error.owner, Stage) else _SECTIONS.get(error.owner)
    return None if section is None else f"{section}.{error.setting}"
