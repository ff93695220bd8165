"""`magvit --help` and every subcommand's `--help` answer without importing torch or a training stage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules that take seconds to import; only running a command may load them.
HEAVY = ("torch", "torchvision", "timm", "webdataset", "magvit.train.tokenizer_stage",
         "magvit.train.transformer_stage", "magvit.train.trainer")

# One fresh interpreter asks for the help of every command (`--help` exits with code 0) and reports, for
# each command, its exit code, its help text and the heavy modules loaded so far.
_PROBE = """
import contextlib, io, json, sys
from magvit.cli import DATA, SIMPLE, main

commands = [[], ["fit"], ["data"], *[[name] for name in SIMPLE], *[["data", name] for name in DATA]]
helps = {}
for command in commands:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main([*command, "--help"])
        except SystemExit as exc:
            code = exc.code
    helps[" ".join(command)] = [code, out.getvalue(), [m for m in HEAVY if m in sys.modules]]
print(json.dumps(helps))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    code = f"HEAVY = {HEAVY!r}\n{_PROBE}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def test_every_help_imports_no_torch_and_no_stage(probe):
    from magvit.cli import DATA, SIMPLE

    assert set(probe) == {"", "fit", "data", *SIMPLE, *(f"data {name}" for name in DATA)}
    for command, (code, text, loaded) in probe.items():
        assert code == 0, (command, text)
        assert text.startswith("usage: magvit"), (command, text)
        assert loaded == [], command


def test_fit_help_still_lists_the_stage_data_and_trainer_settings(probe):
    code, text, loaded = probe["fit"]
    assert code == 0 and loaded == []
    options = {word.rstrip(",") for word in text.split() if word.startswith("--")}
    assert {"--model", "--model.help", "--config", "--data.batch_size", "--data.train", "--trainer.max_steps",
            "--trainer.out_dir", "--resume", "--device"} <= options


def test_settings_records_keep_their_import_paths():
    from magvit.train import data, optim, settings, trainer

    assert trainer.TrainerConfig is settings.TrainerConfig
    assert data.DataConfig is settings.DataConfig
    assert optim.OptimConfig is settings.OptimConfig
