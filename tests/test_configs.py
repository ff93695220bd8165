"""Every YAML under configs/ parses with `magvit fit`'s parser, composes in order and holds the authors' numbers.

Parse only: the configs are not instantiated (a transformer config needs a trained tokenizer checkpoint).
"""

from pathlib import Path

import pytest
import yaml

from magvit.train.fit_config import fit_parser

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATA = sorted(CONFIGS.glob("data/*.yaml"))
TINY = sorted(CONFIGS.glob("tiny/*.yaml"))
TOKENIZER = sorted(CONFIGS.glob("tokenizer/*.yaml"))
TRANSFORMER = sorted(CONFIGS.glob("transformer/*.yaml"))
PAPER = TOKENIZER + TRANSFORMER
#: the studies of `magvit ablate` (not fit configs: each names fit configs and overrides them per arm)
ABLATIONS = sorted(CONFIGS.glob("ablations/*.yaml"))
#: clip size of each dataset (BAIR 64 px, the others 128 px, as in the paper)
RESOLUTION = {"bair": 64, "k600": 128, "ssv2": 128, "ucf101": 128}
TOKENIZER_STAGE = "magvit.train.tokenizer_stage.TokenizerStage"
TRANSFORMER_STAGE = "magvit.train.transformer_stage.TransformerStage"


@pytest.fixture(scope="module")
def parser():
    return fit_parser()


def data_config(path: Path) -> Path:
    """configs/<stage>/<dataset>_<...>.yaml composes with configs/data/<dataset>.yaml."""
    return CONFIGS / "data" / f"{path.stem.split('_')[0]}.yaml"


def parse(parser, *files, args=()):
    return parser.parse_args([a for f in files for a in ("--config", str(f))] + list(args))


def test_every_yaml_is_covered():
    everything = sorted(CONFIGS.rglob("*.y*ml"))
    assert everything == sorted(DATA + TINY + PAPER + ABLATIONS), \
        "a config outside data/, tiny/, tokenizer/, transformer/, ablations/"
    assert len(DATA) == 4 and len(TINY) == 4 and len(TOKENIZER) == 8 and len(TRANSFORMER) == 10
    # every paper config has a data config to compose with, and every data config is used
    assert {data_config(p) for p in PAPER} == set(DATA)


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.stem)
def test_every_arm_of_a_study_parses(parser, path):
    from magvit.ablation import load_study
    from magvit.train.fit_config import parse_fit_config

    def resolved(value):  # another arm's checkpoint ({checkpoint_of: ARM}) as a path
        if isinstance(value, dict):
            return "runs/x/last.pt" if set(value) == {"checkpoint_of"} else {k: resolved(v) for k, v in value.items()}
        return value

    study = load_study(path)
    assert len(study.seeds) >= 3 and study.comparisons and study.primary.why
    for overrides in study.arms.values():
        for stage, base in study.base.items():
            if base is not None:
                parse_fit_config(base, {k: resolved(v) for k, v in {**study.shared[stage], **overrides[stage]}.items()})


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_tiny_config_parses_alone(parser, path):
    cfg = parse(parser, path)
    stage = {"tokenizer": TOKENIZER_STAGE, "transformer": TRANSFORMER_STAGE}[path.stem.split("_")[0]]
    assert cfg.model.class_path == stage
    args = cfg.model.init_args
    assert args.preset == "tiny" and args.resolution == 32  # the synthetic data are 32 px (`magvit data synthetic`)
    assert cfg.data.train == "data/synthetic/train"
    assert cfg.trainer.out_dir == f"outputs/tiny/{path.stem}"


def test_tiny_tokenizer_ablations_differ_from_tiny_tokenizer_only_where_table_7_does(parser):
    """tiny/tokenizer_2d (per-frame 2D-VQ on 4 sampled frames, per-frame discriminator) and tiny/tokenizer_inflated
    (the 3D-VQ started from it by central inflation) keep every other setting of tiny/tokenizer."""
    base, vq2d, inflated = (parse(parser, CONFIGS / f"tiny/{name}.yaml").model.init_args
                            for name in ("tokenizer", "tokenizer_2d", "tokenizer_inflated"))
    assert vq2d.tokenizer == "vq2d" and vq2d.frames_per_clip == 4
    assert vq2d.discriminator_options == {"spatial_dims": 2, "frames": 4}
    assert inflated.tokenizer == "vq3d" and inflated.init_from.inflation == "central"
    assert inflated.init_from.checkpoint == f"{parse(parser, CONFIGS / 'tiny/tokenizer_2d.yaml').trainer.out_dir}/last.pt"
    ablated = {"tokenizer", "frames_per_clip", "discriminator_options", "init_from"}
    for args in (vq2d, inflated):
        assert {k: v for k, v in vars(args).items() if k not in ablated} == \
            {k: v for k, v in vars(base).items() if k not in ablated}


def test_tiny_transformer_reads_the_tiny_tokenizer(parser):
    tok, tr = parse(parser, CONFIGS / "tiny/tokenizer.yaml"), parse(parser, CONFIGS / "tiny/transformer.yaml")
    assert tr.model.init_args.tokenizer_checkpoint == f"{tok.trainer.out_dir}/last.pt"
    assert tr.model.init_args.frames == tok.model.init_args.frames == 16


@pytest.mark.parametrize("path", TOKENIZER, ids=lambda p: p.stem)
def test_paper_tokenizer_config(parser, path):
    cfg = parse(parser, data_config(path), path)
    dataset, size = path.stem.split("_")
    args = cfg.model.init_args
    assert cfg.model.class_path == TOKENIZER_STAGE
    assert args.tokenizer == "vq3d" and args.preset == size and args.resolution == RESOLUTION[dataset]
    # the authors' videogvt/configs/vqgan*: Adam lr 1e-4, betas (0, 0.99), no weight decay, no clipping;
    # EMA 0.999; batch B 128 / L 256
    o = args.optim
    assert (o.lr, tuple(o.betas), o.weight_decay, o.grad_clip) == (1e-4, (0.0, 0.99), 0.0, 0.0)
    assert o.warmup_steps > 0  # one epoch
    assert args.ema_decay == 0.999
    assert (args.l2_weight, args.perceptual_weight, args.adversarial_weight, args.r1_cost) == (1.0, 0.1, 0.1, 10.0)
    assert cfg.data.batch_size == {"B": 128, "L": 256}[size]
    # the data config supplies the shards, the stage config the rest
    assert cfg.data.train == f"data/{dataset}/train" and cfg.data.num_workers == 4
    assert cfg.trainer.out_dir == f"outputs/tokenizer/{path.stem}"


@pytest.mark.parametrize("path", TRANSFORMER, ids=lambda p: p.stem)
def test_paper_transformer_config(parser, path):
    cfg = parse(parser, data_config(path), path)
    dataset, size = path.stem.split("_")[0], path.stem.split("_")[-1]
    args = cfg.model.init_args
    assert cfg.model.class_path == TRANSFORMER_STAGE
    assert args.preset == size and args.resolution == RESOLUTION[dataset] and args.frames == 16
    # the authors' videogvt/configs/maskgvt_*: AdamW lr 1e-4, betas (0.9, 0.96), wd 0.045, clip 1.0, 5000 warm-up
    # steps, batch 256, LS 1e-4
    o = args.optim
    assert (o.lr, tuple(o.betas), o.weight_decay, o.warmup_steps, o.grad_clip) == (1e-4, (0.9, 0.96), 0.045, 5000, 1.0)
    assert cfg.data.batch_size == 256
    assert args.objective.label_smoothing == 1e-4 and args.objective.method == "commit"
    assert cfg.data.train == f"data/{dataset}/train"
    assert cfg.trainer.out_dir == f"outputs/transformer/{path.stem}"
    # the frozen tokenizer is the paper tokenizer of the same size at the same resolution (the authors' vq_model_from)
    ckpt = Path(args.tokenizer_checkpoint)
    assert ckpt.name == "last.pt" and ckpt.parent.parent == Path("outputs/tokenizer")
    tok = parse(parser, data_config(CONFIGS / "tokenizer" / f"{ckpt.parent.name}.yaml"),
                CONFIGS / "tokenizer" / f"{ckpt.parent.name}.yaml")
    assert tok.trainer.out_dir == str(ckpt.parent)
    assert tok.model.init_args.preset == size and tok.model.init_args.resolution == args.resolution
    assert ckpt.parent.name == f"{dataset}_{size}"  # trained on the same data


#: the trainer and optimiser settings that count steps
STEP_KEYS = ("max_steps:", "warmup_steps:", "log_every:", "ckpt_every:", "sample_every:")


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_every_step_count_says_where_it_comes_from(path):
    """Each step count cites the authors' config file or says it is our choice."""
    lines = [line for line in path.read_text().splitlines() if line.strip().startswith(STEP_KEYS)]
    assert len(lines) == len(STEP_KEYS)
    for line in lines:
        comment = line.partition("#")[2]
        assert "videogvt/configs/" in comment or "our choice" in comment, line


@pytest.mark.parametrize("path", TRANSFORMER, ids=lambda p: p.stem)
def test_single_task_configs_have_no_task_prompt(parser, path):
    """As the authors' single-task models (no task token unless config.multi_task): prompt_sharing none."""
    args = parse(parser, data_config(path), path).model.init_args
    assert args.prompt_sharing == ("none" if len(args.tasks) == 1 else "paper")


@pytest.mark.parametrize(
    ("name", "steps", "tasks", "num_classes"),
    [
        ("ucf101_cg_B", 74_000, ["cg"], 101),
        ("bair_fp_B", 67_600, ["fp"], 0),
        ("bair_fp_L", 135_200, ["fp"], 0),
        ("bair_8task_B", 202_800, ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd"], 0),
        ("bair_8task_L", 270_400, ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd"], 0),
        ("ssv2_10task_B", 202_800, ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"], 174),
    ],
)
def test_transformer_run_lengths_and_tasks(parser, name, steps, tasks, num_classes):
    """The authors' training lengths, the task lists and the class counts of the datasets."""
    path = CONFIGS / "transformer" / f"{name}.yaml"
    cfg = parse(parser, data_config(path), path)
    assert cfg.trainer.max_steps == steps
    assert cfg.model.init_args.tasks == tasks and cfg.model.init_args.num_classes == num_classes


def test_k600_uses_five_condition_frames(parser):
    for size in "BL":
        path = CONFIGS / "transformer" / f"k600_fp_{size}.yaml"
        assert parse(parser, data_config(path), path).model.init_args.task_options == {"fp": {"cond_frames": 5}}


def test_print_config_shows_the_composition(parser, tmp_path, capsys):
    override = tmp_path / "override.yaml"
    override.write_text("data:\n  num_workers: 1\n  batch_size: 4\ntrainer:\n  max_steps: 5\n  log_every: 3\n")
    with pytest.raises(SystemExit) as exc:
        parse(parser, CONFIGS / "data/bair.yaml", CONFIGS / "tokenizer/bair_B.yaml", override,
              args=["--trainer.max_steps", "7", "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == TOKENIZER_STAGE
    assert printed["model"]["init_args"]["preset"] == "B"  # from the stage config
    assert printed["model"]["init_args"]["optim"]["betas"] == [0.0, 0.99]
    assert printed["model"]["init_args"]["optim"]["warmup_steps"] == 338
    assert printed["data"]["train"] == "data/bair/train"  # from the data config, not overridden later
    assert printed["data"]["num_workers"] == 1  # the later config overrides the data config's 4
    assert printed["data"]["batch_size"] == 4  # ... and the stage config's 128
    assert printed["trainer"]["log_every"] == 3
    assert printed["trainer"]["max_steps"] == 7  # the command line overrides every config (135200, 5)
    assert printed["trainer"]["out_dir"] == "outputs/tokenizer/bair_B"
    assert printed["resume"] is False


def test_later_config_wins_over_earlier(parser, tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("trainer:\n  max_steps: 11\n")
    second = tmp_path / "b.yaml"
    second.write_text("trainer:\n  max_steps: 22\n")
    base = CONFIGS / "tiny/tokenizer.yaml"
    assert parse(parser, base, first, second).trainer.max_steps == 22
    assert parse(parser, base, second, first).trainer.max_steps == 11
    assert parse(parser, base, first, args=["--trainer.max_steps", "33"]).trainer.max_steps == 33


def test_data_config_alone_lacks_a_model(parser, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(parser, CONFIGS / "data/bair.yaml")
    assert exc.value.code == 2
    assert "error: the following arguments are required: model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainer:\n  bogus: 1\n", "Group 'trainer' does not accept option 'bogus'"),
        ("bogus: 1\n", "'bogus' is not accepted"),
        ("data:\n  batchsize: 4\n", "Group 'data' does not accept option 'batchsize'"),
        ("model:\n  class_path: " + TOKENIZER_STAGE + "\n  init_args:\n    bogus: 1\n", "Option 'bogus' is not accepted"),
        ("trainer:\n  max_steps: many\n", "Expected a <class 'int'>. Got value: many"),
    ],
    ids=["trainer-key", "top-level-key", "data-typo", "model-init-arg", "wrong-type"],
)
def test_bad_key_in_config_file_is_rejected(parser, tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exc:
        parse(parser, CONFIGS / "tiny/tokenizer.yaml", bad)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
