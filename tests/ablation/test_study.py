"""Study files (magvit.ablation.study): the shipped paper tables load, and a bad file is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from magvit.ablation.study import arm_references, load_study
from magvit.cli import main
from magvit.configs import config_dir, resolve_config
from magvit.errors import InputError
from tests.helpers.cli import one_line_error

SHIPPED = {
    4: ["multi_task", "fp_only", "unc_only"],
    5: ["commit", "latent", "prefix", "commit_no_refine", "commit_no_refine_no_recons"],
    6: ["commit", "maskgit", "ar", "maskgit_2d"],
    7: ["vq3d", "vq2d", "vq3d_central", "vq3d_average"],
}


@pytest.mark.parametrize("table", sorted(SHIPPED))
def test_every_shipped_study_loads_with_its_arms_and_seeds(table):
    study = load_study(config_dir() / "ablations" / f"table{table}.yaml")
    assert (study.name, study.table) == (f"table{table}", table)
    assert list(study.arms) == SHIPPED[table]
    assert study.seeds == [0, 1, 2]
    # the transformer tables share one tokenizer over seeds (as the paper's rows share one 3D-VQ)
    assert study.seed_stages == (("tokenizer", "transformer") if table == 7 else ("transformer",))
    assert study.tokenizer_only == (table == 7)
    assert study.comparisons
    for comparison in study.comparisons:
        assert {comparison.better, comparison.worse} <= set(study.arms)
        assert comparison.task is None or comparison.task in study.evaluation.tasks
    assert set(study.paper.values) <= set(study.arms)
    for stage, config in study.base.items():
        if config is not None:
            assert Path(resolve_config(config)).is_file(), (stage, config)


def test_table7_inflates_the_2d_arm_of_the_same_seed():
    study = load_study(config_dir() / "ablations" / "table7.yaml")
    refs = {arm: [r for value in o["tokenizer"].values() for r in arm_references(value)]
            for arm, o in study.arms.items()}
    assert refs == {"vq3d": [], "vq2d": [], "vq3d_central": ["vq2d"], "vq3d_average": ["vq2d"]}


def test_paper_numbers_are_read_per_arm_and_task():
    study = load_study(config_dir() / "ablations" / "table5.yaml")
    assert study.paper.values["commit"] == {"fp": 48, "average": 33}
    assert study.paper.values["prefix"] == {"fp": 55}


GOOD = """\
name: s
table: 5
primary_metric: {task: fp, metric: psnr_generated, higher_is_better: true, why: test}
base: {tokenizer: tiny/tokenizer, transformer: tiny/transformer}
arms:
  a: {}
  b: {transformer: {model.init_args.objective.method: latent}}
seeds: [0, 1]
seed_stages: [transformer]
comparisons: [{better: a, worse: b}]
paper: {metric: FVD, values: {a: {fp: 48}, b: {fp: 74}}}
"""

REFERS_TO = "{tokenizer: {model.init_args.init_from: {checkpoint: {checkpoint_of: %s}, inflation: central}}}"


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _edited(edits: dict[str, str] | str) -> str:
    """GOOD with each ``old: new`` replacement made (each ``old`` occurs once), or a whole replacement text."""
    if isinstance(edits, str):
        return edits
    text = GOOD
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# (edits of GOOD, fragments the one error line holds)
BAD = {
    "missing seeds": ({"seeds: [0, 1]\n": ""}, ["missing key 'seeds'"]),
    "seeds not ints": ({"seeds: [0, 1]": "seeds: [zero, 1]"},
                       ["seeds must be a non-empty list of integers", "['zero', 1]"]),
    "seeds a float": ({"seeds: [0, 1]": "seeds: [0.5]"}, ["seeds must be a non-empty list of integers"]),
    "seeds a bool": ({"seeds: [0, 1]": "seeds: [true, 2]"}, ["seeds must be a non-empty list of integers"]),
    "seeds not a list": ({"seeds: [0, 1]": "seeds: 0"}, ["seeds must be a non-empty list of integers"]),
    "seeds empty": ({"seeds: [0, 1]": "seeds: []"}, ["seeds must be a non-empty list of integers"]),
    "duplicate seeds": ({"seeds: [0, 1]": "seeds: [0, 1, 0]"}, ["seeds must be distinct", "[0, 1, 0]"]),
    "comparison of an unknown arm": ({"worse: b}": "worse: c}"}, ["comparisons[0] names arm 'c'", "['a', 'b']"]),
    "comparison without worse": ({", worse: b}": "}"}, ["comparisons[0]", "worse"]),
    "comparisons not a list": ({"comparisons: [{better: a, worse: b}]": "comparisons: 3"},
                               ["comparisons must be a list"]),
    "unknown top-level key": ({"table: 5": "table: 5\ncolour: red"}, ["unknown keys ['colour']"]),
    "unknown stage of an arm": ({"  a: {}": "  a: {decoder: {x: 1}}"}, ["arms.a", "unknown keys ['decoder']"]),
    "no arms": ({"  a: {}\n  b: {transformer: {model.init_args.objective.method: latent}}\n": ""},
                ["arms must map each arm's name to its overrides"]),
    "no tokenizer": ({"base: {tokenizer: tiny/tokenizer, ": "base: {"}, ["base needs a tokenizer config"]),
    "unknown primary_metric key": ({"why: test}": "why: test, weight: 2}"},
                                   ["primary_metric", "unknown keys ['weight']"]),
    "checkpoint_of an unknown arm": ({"  a: {}": "  a: " + REFERS_TO % "z"},
                                     ["arms.a names checkpoint_of 'z'", "['a', 'b']"]),
    "two arms naming each other": ({"  a: {}": "  a: " + REFERS_TO % "b",
                                    "  b: {transformer: {model.init_args.objective.method: latent}}":
                                    "  b: " + REFERS_TO % "a"},
                                   ["depends on its own checkpoint through checkpoint_of"]),
    "an arm naming itself": ({"  a: {}": "  a: " + REFERS_TO % "a"},
                             ["arms.a depends on its own checkpoint through checkpoint_of"]),
    "seed_stages of an unknown stage": ({"seed_stages: [transformer]": "seed_stages: [decoder]"},
                                        ["seed_stages must be a non-empty list of ['tokenizer', 'transformer']",
                                         "['decoder']"]),
    "seed_stages empty": ({"seed_stages: [transformer]": "seed_stages: []"},
                          ["seed_stages must be a non-empty list", "got []"]),
    "seed_stages not a list": ({"seed_stages: [transformer]": "seed_stages: transformer"},
                               ["seed_stages must be a non-empty list"]),
    "paper numbers of an unknown arm": ({"b: {fp: 74}": "z: {fp: 74}"}, ["paper.values names arm 'z'"]),
    "paper numbers not per task": ({"b: {fp: 74}": "b: 74"}, ["paper.values.b must map each task to a number"]),
    "paper numbers not a number": ({"b: {fp: 74}": "b: {fp: many}"},
                                   ["paper.values.b must map each task to a number"]),
    "paper values not a mapping": ({"values: {a: {fp: 48}, b: {fp: 74}}": "values: null"},
                                   ["paper.values must map each arm"]),
    "an unknown primary metric": ({"metric: psnr_generated": "metric: fvd_generated"},
                                  ["primary_metric: metric 'fvd_generated' is not a score of a transformer study",
                                   "'token_nll'"]),
    "a tokenizer study scored by a generation metric": (
        {"base: {tokenizer: tiny/tokenizer, transformer: tiny/transformer}": "base: {tokenizer: tiny/tokenizer}"},
        ["metric 'psnr_generated' is not a score of a tokenizer study", "['psnr', 'ssim', 'fvd']"]),
    "an unknown secondary metric": ({"seeds: [0, 1]": "seeds: [0, 1]\nsecondary_metrics: [{metric: nll, "
                                     "higher_is_better: false, why: w}]"},
                                    ["secondary_metrics[0]: metric 'nll' is not a score"]),
    "a secondary metric without a direction": ({"seeds: [0, 1]": "seeds: [0, 1]\nsecondary_metrics: "
                                                "[{metric: token_nll, why: w}]"},
                                               ["secondary_metrics[0]", "higher_is_better"]),
    "secondary metrics not a list": ({"seeds: [0, 1]": "seeds: [0, 1]\nsecondary_metrics: token_nll"},
                                     ["secondary_metrics must be a list"]),
    "not YAML": ("name: [s\ntable: 5\n", ["not valid YAML"]),
    "a list, not a mapping": ("- name: s\n- table: 5\n", ["expected a mapping with keys name, table"]),
    "an empty file": ("", ["expected a mapping with keys name, table"]),
}


def test_the_good_study_loads(tmp_path):
    study = load_study(_write(tmp_path, GOOD))
    assert list(study.arms) == ["a", "b"]
    assert study.arms["b"] == {"tokenizer": {}, "transformer": {"model.init_args.objective.method": "latent"}}
    assert (study.seeds, study.seed_stages) == ([0, 1], ("transformer",))
    assert study.paper.values == {"a": {"fp": 48}, "b": {"fp": 74}}


def test_secondary_metrics_are_read_in_order(tmp_path):
    text = _edited({"seeds: [0, 1]": "seeds: [0, 1]\nsecondary_metrics:\n"
                    "  - {metric: token_nll, higher_is_better: false, why: sampling-free}\n"
                    "  - {metric: ssim, higher_is_better: true, why: structure}"})
    study = load_study(_write(tmp_path, text))
    assert [(m.metric, m.higher_is_better, m.why) for m in study.secondary] == [
        ("token_nll", False, "sampling-free"), ("ssim", True, "structure")]
    assert load_study(_write(tmp_path, GOOD)).secondary == ()
    shipped = {t: [m.metric for m in load_study(config_dir() / "ablations" / f"table{t}.yaml").secondary]
               for t in SHIPPED}
    assert shipped == {4: ["token_nll", "token_accuracy"], 5: ["token_nll", "token_accuracy"], 6: [], 7: []}


def test_seed_stages_default_to_both_stages(tmp_path):
    study = load_study(_write(tmp_path, _edited({"seed_stages: [transformer]\n": ""})))
    assert study.seed_stages == ("tokenizer", "transformer")


def test_an_arm_may_name_another_arms_checkpoint(tmp_path):
    study = load_study(_write(tmp_path, _edited({"  a: {}": "  a: " + REFERS_TO % "b"})))
    assert study.arms["a"]["tokenizer"]["model.init_args.init_from"] == {
        "checkpoint": {"checkpoint_of": "b"}, "inflation": "central"}


@pytest.mark.parametrize(("edits", "fragments"), list(BAD.values()), ids=list(BAD))
def test_a_bad_study_is_an_input_error_naming_the_problem(tmp_path, edits, fragments):
    path = _write(tmp_path, _edited(edits))
    with pytest.raises(InputError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(path)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(("edits", "fragments"), list(BAD.values()), ids=list(BAD))
def test_ablate_refuses_a_bad_study_in_one_line_before_training(tmp_path, capsys, edits, fragments):
    out = tmp_path / "out"
    assert main(["ablate", _write(tmp_path, _edited(edits)), "--out", str(out), "--smoke"]) == 2
    one_line_error(capsys, *fragments)
    assert not (out / "runs").exists()


@pytest.mark.parametrize(("option", "value", "fragments"), [
    ("--arms", '["nope"]', ["--arms ['nope']: not arms of study s", "(its arms: ['a', 'b'])"]),
    ("--arms", '["a", "nope"]', ["--arms ['nope']: not arms of study s"]),
    ("--seeds", "[7]", ["--seeds [7]: not seeds of study s", "(its seeds: [0, 1])"]),
])
def test_ablate_refuses_an_unknown_arm_or_seed_before_writing_data(tmp_path, capsys, option, value, fragments):
    out = tmp_path / "out"
    assert main(["ablate", _write(tmp_path, GOOD), "--out", str(out), "--smoke", option, value]) == 2
    one_line_error(capsys, *fragments)
    assert not (out / "runs").exists() and not (out / "data").exists()


def test_arm_references_finds_checkpoint_of_at_any_depth():
    value = {"checkpoint": {"checkpoint_of": "vq2d"}, "inflation": "central",
             "more": [1, {"checkpoint_of": "a"}, [{"deeper": {"checkpoint_of": "b"}}]]}
    assert arm_references(value) == ["vq2d", "a", "b"]
    assert arm_references([{"checkpoint_of": "x"}, "y"]) == ["x"]
    assert arm_references({"checkpoint_of": 3}) == ["3"]


def test_arm_references_ignores_checkpoint_of_beside_other_keys():
    # only a mapping whose one key is checkpoint_of stands for a checkpoint; otherwise it is an ordinary value
    assert arm_references({"checkpoint_of": "a", "strict": True}) == []
    assert arm_references({"x": {"checkpoint_of": "a", "inflation": "central"}}) == []
    assert arm_references("checkpoint_of") == [] and arm_references(None) == [] and arm_references(3) == []
