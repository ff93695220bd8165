"""One config mechanism: recorded constructor arguments, ``{"name", "config"}`` specs, parts built back."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pytest
import torch

from magvit import registry
from magvit.config import (
    KINDS,
    FrozenConfig,
    build_part,
    option_names,
    part_config,
    part_spec,
    read_spec,
    records_config,
    register_to_config,
)
from magvit.errors import InputError, MagvitError
from magvit.hookspecs import hookimpl
from magvit.masking import ExpSchedule, task_token_mask
from magvit.objective import MultiTaskObjective, ObjectiveConfig
from magvit.pipeline import MagvitPipeline, tasks_from_specs
from magvit.protocols import AnalyticTokenMask, Condition, Task, Tokenizer
from magvit.tasks import FramePrediction, build_tasks
from magvit.tokenizers import VQ2D, VQ3D
from magvit.transformer import MaskedTransformer
from tests.helpers import PaletteTokenizer

# -- plugin parts of this module (registered through the hooks by the `plugin_registry` fixture) ------------


class StridedPrediction:
    """A plugin task that is not an attrs class: keeps every ``stride``-th of the first ``cond_frames`` frames."""

    name = "strided"
    uses_class = False
    needs_video = True
    deterministic = True

    @register_to_config
    def __init__(self, cond_frames: int = 2, stride: int = 1, prompt: str = "strided") -> None:
        self.cond_frames, self.stride, self.prompt = cond_frames, stride, prompt

    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> Condition:
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool)
        mask[:, :, : self.cond_frames : self.stride] = True
        return Condition(video * mask, mask)


class UnrecordedPrediction(StridedPrediction):
    """Its own ``__init__`` is not decorated: the arguments it takes are not its base's."""

    name = "unrecorded"

    def __init__(self, cond_frames: int = 2) -> None:
        super().__init__(cond_frames=cond_frames, stride=1, prompt="unrecorded")


class PlainPrediction:
    """Neither attrs nor decorated."""

    name = "plain"
    prompt = "plain"
    uses_class = False
    needs_video = True
    deterministic = True

    def __init__(self, cond_frames: int = 2) -> None:
        self.cond_frames = cond_frames

    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> Condition:
        mask = torch.zeros(video.shape[0], 1, *video.shape[2:], dtype=torch.bool)
        mask[:, :, : self.cond_frames] = True
        return Condition(video * mask, mask)


@hookimpl
def magvit_add_tasks() -> Mapping[str, Callable[..., Any]]:
    return {"strided": StridedPrediction, "unrecorded": UnrecordedPrediction, "plain": PlainPrediction}


@pytest.fixture
def plugin_registry(monkeypatch):
    reg = registry.Registry(builtins=(*registry.BUILTIN_PLUGINS, __name__), entry_points=[])
    monkeypatch.setattr(registry, "default_registry", lambda: reg)
    return reg


# -- every registered part round-trips ------------------------------------------------------------------------

#: Options that keep a default build small (a B-size 3D-VQ allocates ~100M parameters).
SMALL = {"tokenizer": {"preset": "tiny", "resolution": 32}}


def _registered() -> list[tuple[str, str]]:
    return [(kind, name) for kind in KINDS for name in registry.default_registry().names(kind)]


@pytest.mark.parametrize(("kind", "name"), _registered(), ids=lambda v: v.replace(" ", "-"))
def test_every_registered_part_round_trips_through_its_spec(kind, name):
    options = SMALL.get(kind, {}) if option_names(registry.default_registry().entry(kind, name).factory) is None else {}
    part = build_part(kind, {"name": name, "config": options})
    spec = part_spec(part, name)
    assert spec["name"] == name
    loaded = json.loads(json.dumps(spec))  # what a config.json holds
    again = build_part(kind, loaded)
    assert type(again) is type(part) and part_spec(again, name) == spec
    if isinstance(part, torch.nn.Module):  # same arguments, seed included: the same weights
        assert all(torch.equal(a, b) for a, b in zip(part.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(("kind", "part"), [
    ("task", FramePrediction(cond_frames=3, cond_latent_frames=1, prompt="fp5")),
    ("mask scheduler", ExpSchedule(num_tokens=256)),
    ("tokenizer", VQ3D(filters=8, channel_multipliers=(1, 2), temporal_downsample=(False,), num_res_blocks=0,
                       codebook_size=16, embedding_dim=4, norm_groups=4, padding="zeros", seed=3)),
    ("tokenizer", VQ2D(filters=8, channel_multipliers=[1, 2], num_res_blocks=0, codebook_size=16, embedding_dim=4,
                       norm_groups=4, quantizer="lfq")),
    ("sampler", registry.get_sampler("maskgit", choice_temperature=2.0, schedule=ExpSchedule(num_tokens=64))),
], ids=["task", "schedule", "vq3d", "vq2d", "sampler"])
def test_non_default_arguments_round_trip(kind, part):
    spec = part_spec(part)
    again = build_part(kind, json.loads(json.dumps(spec)))
    assert part_spec(again) == spec


def test_a_part_given_to_a_part_is_written_as_its_spec():
    sampler = registry.get_sampler("commit", schedule=ExpSchedule(num_tokens=64))
    assert part_config(sampler)["schedule"] == {"name": "exp", "config": {"num_tokens": 64}}


# -- what a spec records -----------------------------------------------------------------------------------


def test_specs_of_the_builtin_parts():
    assert part_spec(FramePrediction(cond_frames=5)) == {
        "name": "fp", "config": {"cond_frames": 5, "cond_latent_frames": None, "prompt": "fp"}}
    assert part_spec(registry.get_mask_scheduler("cosine")) == {"name": "cosine", "config": {}}
    tok = registry.get_tokenizer("vq3d", preset="tiny", resolution=64)
    assert part_spec(tok) == {"name": "vq3d", "config": {
        "filters": 16, "channel_multipliers": [1, 2, 4], "temporal_downsample": [True, True], "num_res_blocks": 1,
        "codebook_size": 256, "embedding_dim": 8, "norm_groups": 8, "padding": "reflect", "quantizer": "vq",
        "commitment_cost": 0.25, "entropy_weight": 0.1, "entropy_temperature": 0.01, "sync_across_ranks": True,
        "seed": 0, "activation_checkpointing": False}}


def test_vq2d_records_no_temporal_downsample():
    tok = registry.get_tokenizer("vq2d", preset="tiny", resolution=64)
    assert "temporal_downsample" not in tok.config and tok.downsample == (1, 4, 4)


def test_transformer_config_keeps_its_keys_and_loads_a_saved_one():
    model = MaskedTransformer(16, num_classes=2, prompts=("fp", "cg"), num_tokens=8, num_layers=1, hidden_size=16,
                              num_heads=2, mlp_dim=32)
    assert list(model.config) == ["codebook_size", "num_classes", "prompts", "num_tokens", "num_layers",
                                  "hidden_size", "num_heads", "mlp_dim", "dropout", "attention_dropout", "causal",
                                  "prefix_condition", "init_seed", "activation_checkpointing"]
    assert model.config["prompts"] == ["fp", "cg"] and model.config["dropout"] == 0.1
    saved = json.loads(json.dumps(model.config))
    again = MaskedTransformer.from_config(saved)
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(InputError, match="unknown transformer option 'depth'"):
        MaskedTransformer.from_config({**saved, "depth": 2})


# -- register_to_config ----------------------------------------------------------------------------------------


class _Base:
    @register_to_config
    def __init__(self, width: int = 4, sizes: tuple[int, ...] = (1, 2), **extra: Any) -> None:
        self.width = width


class _Child(_Base):
    @register_to_config
    def __init__(self, depth: int = 2, width: int = 8) -> None:
        assert self.config == {"depth": depth, "width": width}  # recorded before the body runs
        super().__init__(width=width, sizes=(3,), unused=1)


class _Inheriting(_Base):
    pass


def test_register_to_config_records_bound_arguments_with_defaults():
    assert _Base().config == {"width": 4, "sizes": [1, 2]}
    assert _Base(5, [7], colour="red").config == {"width": 5, "sizes": [7], "colour": "red"}
    assert _Inheriting(width=6).config == {"width": 6, "sizes": [1, 2]}


def test_a_base_constructor_does_not_overwrite_the_subclass_record():
    child = _Child(depth=3)
    assert child.config == {"depth": 3, "width": 8} and child.width == 8


def test_config_is_read_only_and_survives_copies():
    config = _Base(sizes=[1]).config
    assert isinstance(config, FrozenConfig) and isinstance(config, dict)
    for change in (lambda c: c.update(width=1), lambda c: c.__setitem__("width", 1), lambda c: c.pop("width"),
                   lambda c: c.clear(), lambda c: c.setdefault("x", 1)):
        with pytest.raises(TypeError, match="read-only"):
            change(config)
    assert config | {"width": 9} == {"width": 9, "sizes": [1]} and type(config | {}) is dict
    for clone in (copy.copy(config), copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert type(clone) is FrozenConfig and clone == config
    assert json.loads(json.dumps(config)) == config


def test_the_recorded_lists_are_copies_of_the_arguments():
    sizes = [1, 2]
    part = _Base(sizes=sizes)
    sizes.append(3)
    assert part.config["sizes"] == [1, 2]


def test_star_args_cannot_be_recorded():
    with pytest.raises(TypeError, match=r"cannot record the \*args"):
        register_to_config(lambda self, *sizes: None)


def test_a_wrong_call_raises_the_constructors_own_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'depht'"):
        _Child(depht=3)


# -- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", [PlainPrediction(), UnrecordedPrediction()], ids=["plain", "undecorated-subclass"])
def test_a_part_without_recorded_arguments_is_refused_at_save(part):
    assert not records_config(part)
    with pytest.raises(MagvitError, match=r"records no constructor arguments.*@magvit.config.register_to_config"
                                          r".*attrs class"):
        part_spec(part)


def test_a_pipeline_with_such_a_task_refuses_to_save(plugin_registry, tmp_path):
    pipe = _pipeline([PlainPrediction(cond_frames=3)])
    with pytest.raises(MagvitError, match="'plain'.*records no constructor arguments"):
        pipe.save(tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()


def test_an_argument_a_file_cannot_hold_is_refused():
    with pytest.raises(MagvitError, match=r"constructor argument 'sizes' is .*Generator"):
        part_config(_Base(sizes=[torch.Generator()]))
    with pytest.raises(MagvitError, match="has no registry name"):
        part_spec(_Base())


def test_read_spec_accepts_a_name_a_spec_and_the_args_key():
    assert read_spec("task", "fp") == ("fp", {})
    assert read_spec("task", {"name": "fp", "config": {"cond_frames": 2}}) == ("fp", {"cond_frames": 2})
    assert read_spec("task", {"name": "fp", "args": {"cond_frames": 2}}) == ("fp", {"cond_frames": 2})


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "fp", "config": {}, "args": {}}, "both config and args"),
    ({"name": "fp", "confg": {}}, "unknown key 'confg'"),
    ({"config": {}}, "its name must be a non-empty str, got None"),
    ({"name": "fp", "config": [1]}, "the config of task 'fp' must map option names to values"),
    (3, "a task spec is a registry name or"),
])
def test_a_malformed_spec_is_one_input_error(spec, message):
    with pytest.raises(InputError, match=message):
        build_part("task", spec)


@pytest.mark.parametrize(("kind", "spec", "message"), [
    ("task", {"name": "nope"}, "unknown task 'nope'; registered tasks: fp, fi"),
    ("task", {"name": "fp", "config": {"foo": 1}}, "task 'fp' has no option 'foo'; its options: cond_frames"),
    ("task", {"name": "fp", "config": {"cond_frames": 0}}, "task 'fp' refuses the options .*cond_frames must be >= 1"),
    ("mask scheduler", {"name": "exp", "config": {"n": 1}}, "mask scheduler 'exp' has no option 'n'"),
    ("tokenizer", {"name": "vq3d", "config": {"bogus": 1}}, r"unknown tokenizer arguments \['bogus'\]"),
    ("sampler", {"name": "nope"}, "unknown sampler 'nope'"),
    ("model", {"name": "fp"}, "a part's kind is one of task, tokenizer, mask scheduler, sampler"),
])
def test_build_part_errors_name_what_is_wrong(kind, spec, message):
    with pytest.raises(InputError, match=message):
        build_part(kind, spec)


# -- tasks in saved pipelines ----------------------------------------------------------------------------------


def _pipeline(tasks: list[Any]) -> MagvitPipeline:
    tokenizer = registry.get_tokenizer("vq3d", preset="tiny", resolution=16)
    model = MaskedTransformer.from_preset("tiny", codebook_size=tokenizer.codebook_size, num_classes=0,
                                          prompts=[t.prompt for t in tasks], num_tokens=32, num_layers=1,
                                          hidden_size=16, num_heads=2, mlp_dim=32)
    return MagvitPipeline(tokenizer, model, tasks, frames=8, resolution=16)


def test_a_plugin_task_reloads_with_its_arguments(plugin_registry, tmp_path):
    task = StridedPrediction(cond_frames=3, stride=2, prompt="strided")
    pipe = _pipeline([task, FramePrediction(cond_frames=2)])
    pipe.save(tmp_path / "p.pt")
    pipe.save_pretrained(tmp_path / "folder")
    for loaded in (MagvitPipeline.from_checkpoint(tmp_path / "p.pt"), MagvitPipeline.from_pretrained(tmp_path / "folder")):
        again = loaded.tasks["strided"]
        assert isinstance(again, StridedPrediction) and (again.cond_frames, again.stride) == (3, 2)
        assert loaded.tasks["fp"] == FramePrediction(cond_frames=2)
    config = json.loads((tmp_path / "folder" / "config.json").read_text())
    assert config["tasks"][0] == {"name": "strided", "config": {"cond_frames": 3, "stride": 2, "prompt": "strided"}}


def test_task_specs_of_the_args_format_still_load():
    old = [{"name": "fp", "args": {"cond_frames": 5, "cond_latent_frames": None, "prompt": "fp"}},
           {"name": "opc", "args": {"prompt": "op"}}, {"name": "cg"}]
    assert tasks_from_specs(old) == [FramePrediction(cond_frames=5), *build_tasks(["opc"], prompt_sharing="code"),
                                     *build_tasks(["cg"])]


def test_a_checkpoint_with_args_task_specs_loads(plugin_registry, tmp_path):
    _pipeline([StridedPrediction(cond_frames=3, stride=2), FramePrediction(cond_frames=2)]).save(tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    state["model_config"]["tasks"] = [{"name": s["name"], "args": s["config"]} for s in state["model_config"]["tasks"]]
    torch.save(state, tmp_path / "args.pt")
    loaded = MagvitPipeline.from_checkpoint(tmp_path / "args.pt")
    assert (loaded.tasks["strided"].cond_frames, loaded.tasks["strided"].stride) == (3, 2)
    assert loaded.tasks["fp"] == FramePrediction(cond_frames=2)


def test_the_shipped_demo_model_loads_with_its_tasks():
    pipe = MagvitPipeline.from_pretrained("demo")
    assert list(pipe.tasks) == ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"]
    assert part_spec(pipe.tasks["fp"]) == {"name": "fp", "config": {"cond_frames": 1, "cond_latent_frames": None,
                                                                    "prompt": "fp"}}


# -- mask schedules from a config ----------------------------------------------------------------------------


def test_objective_schedule_takes_a_name_or_a_spec():
    tok = PaletteTokenizer()
    tasks = build_tasks(["fp"])
    spec = {"name": "exp", "config": {"num_tokens": 256}}
    assert MultiTaskObjective(tok, tasks, config=ObjectiveConfig(schedule=spec)).scheduler == ExpSchedule(256)
    assert MultiTaskObjective(tok, tasks, config=ObjectiveConfig(schedule="linear")).scheduler.name == "linear"
    with pytest.raises(InputError, match="mask scheduler 'exp' has no option 'tokens'"):
        ObjectiveConfig(schedule={"name": "exp", "config": {"tokens": 256}})
    with pytest.raises(InputError, match="unknown mask scheduler 'cosin'"):
        ObjectiveConfig(schedule="cosin")


# -- protocols -----------------------------------------------------------------------------------------------


def test_tokenizers_satisfy_the_widened_protocol():
    for tok in (registry.get_tokenizer("vq3d", preset="tiny", resolution=32), PaletteTokenizer()):
        assert isinstance(tok, Tokenizer) and records_config(tok)


def test_the_analytic_token_mask_is_an_optional_capability():
    assert all(isinstance(t, AnalyticTokenMask) for t in build_tasks(["fp", "fi", "opc", "ipd", "cg"]))
    task = StridedPrediction()
    assert isinstance(task, Task) and not isinstance(task, AnalyticTokenMask)
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="task 'strided' has no analytic_token_mask"):
        task_token_mask(task, mask, (1, 1, 1), "analytic")


def test_attrs_parts_need_nothing():
    @attrs.frozen
    class Flat:
        level: float = 0.5
        name = "flat"

    assert records_config(Flat()) and part_spec(Flat(0.25)) == {"name": "flat", "config": {"level": 0.25}}
