"""MagvitPipeline.save_pretrained / from_pretrained: the folder format, named pipelines, and their errors."""

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from magvit import hookimpl, registry
from magvit.errors import MagvitError
from magvit.pipeline import CONFIG_NAME, WEIGHTS_NAME, MagvitPipeline


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return MagvitPipeline.from_preset("tiny", tasks=["fp", "cg"], num_classes=4, resolution=32)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    return pipe.save_pretrained(tmp_path_factory.mktemp("pretrained") / "tiny")


def test_round_trip_gives_the_same_videos(pipe, saved):
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary folder left
    assert sorted(p.name for p in saved.parent.iterdir()) == ["tiny"]
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["format"] == "magvit-pipeline" and config["tokenizer"]["name"] == "vq3d"
    loaded = MagvitPipeline.from_pretrained(saved)
    assert list(loaded.tasks) == ["fp", "cg"] and loaded.resolution == 32
    clip = torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    a = pipe.generate("fp", clip, steps=2, generator=torch.Generator().manual_seed(1))
    b = loaded.generate("fp", clip, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = pipe("cg", label=2, steps=2, generator=torch.Generator().manual_seed(1))  # __call__ is generate
    assert torch.equal(c, loaded("cg", label=2, steps=2, generator=torch.Generator().manual_seed(1)))
    assert loaded.to("cpu") is loaded and loaded.device == torch.device("cpu")


def test_demo_is_registered_and_generates():
    assert "demo" in registry.pipeline_names()
    from magvit import MagvitPipeline as exported

    demo = exported.from_pretrained("demo")
    out = demo("cg", label=0, steps=1)
    assert out.shape == (1, 3, demo.frames, demo.resolution, demo.resolution)


#: where the plugin below says its pipelines are (set by the tests)
PLUGIN_PATHS: dict[str, Path] = {}


@hookimpl
def magvit_add_pipelines() -> Mapping[str, Callable[..., Any]]:
    return {"plugin-tiny": lambda: PLUGIN_PATHS["plugin-tiny"], "plugin-gone": lambda: PLUGIN_PATHS["plugin-gone"]}


def test_a_plugin_registers_a_pipeline_by_name(saved, tmp_path, monkeypatch):
    reg = registry.Registry(builtins=(*registry.BUILTIN_PLUGINS, __name__), entry_points=[])
    monkeypatch.setattr(registry, "default_registry", lambda: reg)
    monkeypatch.setitem(PLUGIN_PATHS, "plugin-tiny", saved)
    monkeypatch.setitem(PLUGIN_PATHS, "plugin-gone", tmp_path / "gone")
    assert registry.pipeline_names() == ["demo", "plugin-tiny", "plugin-gone"]
    assert list(MagvitPipeline.from_pretrained("plugin-tiny").tasks) == ["fp", "cg"]
    with pytest.raises(MagvitError, match=rf"pipeline 'plugin-gone' of plugin '{__name__}' .* does not exist"):
        MagvitPipeline.from_pretrained("plugin-gone")


def test_unknown_name_lists_the_registered_ones(tmp_path):
    with pytest.raises(MagvitError, match=r"'no-such-model' is neither a registered pipeline \(registered: demo"
                       r".*config\.json") as exc:
        MagvitPipeline.from_pretrained("no-such-model")
    assert "\n" not in str(exc.value)


def test_overwrite_is_refused_unless_asked(pipe, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(MagvitError, match="exists and is not empty; pass overwrite=True"):
        pipe.save_pretrained(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    pipe.save_pretrained(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _copy(saved, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (folder / name).write_bytes((saved / name).read_bytes())
    return folder


def test_unknown_transformer_option_is_one_line(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["transformer"]["flash"] = True
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(MagvitError, match="unknown transformer option 'flash'") as exc:
        MagvitPipeline.from_pretrained(folder)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.pop("format"), "not a magvit pipeline config"),
    (lambda c: c.update(tasks={"fp": {}}), "entry tasks should be a list"),
    (lambda c: c.update(version=99), "has version 99"),
])
def test_malformed_config_is_one_line(saved, tmp_path, edit, message):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / CONFIG_NAME).read_text())
    edit(config)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(MagvitError, match=message) as exc:
        MagvitPipeline.from_pretrained(folder)
    assert "\n" not in str(exc.value)


def test_folder_without_weights(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(MagvitError, match="has no model.safetensors; expected a folder written by"):
        MagvitPipeline.from_pretrained(folder)


def test_a_failed_overwrite_keeps_the_old_folder(pipe, tmp_path, monkeypatch):
    """The new folder is renamed into place after the old one is moved aside; if that rename fails, the old
    folder is put back, so an overwrite never loses the saved pipeline."""
    target = pipe.save_pretrained(tmp_path / "p")
    before = {f.name: f.read_bytes() for f in target.iterdir()}
    real_replace = __import__("os").replace

    def failing_replace(src, dst):
        if Path(src).name.startswith(".p.partial-"):
            raise OSError(28, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr("magvit.pipeline.os.replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        pipe.save_pretrained(target, overwrite=True)
    assert {f.name: f.read_bytes() for f in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]
