"""Fault suite: a broken plugin disables itself, with one warning naming it, and nothing else.

Every case builds a :class:`Registry` from fake plugin modules written to ``tmp_path`` and checks that the
bad plugin is listed in ``errors`` with its name and the reason, that it registered nothing, that the good
plugins and the built-ins are all there, and that a built-in still builds. The end-to-end cases run
``magvit plugins`` / ``magvit tasks`` in a subprocess with a broken plugin installed as a distribution
(a ``.dist-info`` folder on ``PYTHONPATH``), as a user would see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from magvit.registry import PluginWarning, Registry

TEN = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"]
KINDS = ("task", "tokenizer", "mask scheduler")

#: A well-behaved plugin: one task and one mask schedule.
GOOD = """
import attrs
import torch
from magvit import hookimpl
from magvit.protocols import Condition

@attrs.frozen
class Still:
    prompt: str = "still"
    name = "still"
    uses_class = False
    needs_video = True
    deterministic = True

    def condition(self, video, generator=None):
        return Condition(video, torch.ones(video.shape[0], 1, *video.shape[2:], dtype=torch.bool))

@attrs.frozen
class Flat:
    name = "flat"

    def ratio(self, progress):
        return 1 - torch.as_tensor(progress, dtype=torch.float64) * 0.5

@hookimpl
def magvit_add_tasks():
    return {"still": Still}

@hookimpl
def magvit_add_mask_schedulers():
    return {"flat": Flat}
"""

#: A plugin that also registers a harmless mask schedule, to check nothing of a disabled plugin stays.
EXTRA = """
from magvit import hookimpl
from magvit.masking import LinearSchedule

@hookimpl
def magvit_add_mask_schedulers():
    return {"extra_schedule": LinearSchedule}
"""

Write = Callable[[str, str], EntryPoint]


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Write]:
    """``plugin(module, source) -> EntryPoint``: a plugin module importable for this test only."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(module: str, body: str) -> EntryPoint:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
        sys.modules.pop(module, None)  # another test may have imported its own module of that name
        written.append(module)
        return EntryPoint(name=module, value=module, group="magvit")

    yield write
    for module in written:
        sys.modules.pop(module, None)


def load(*entry_points: EntryPoint) -> tuple[Registry, list[str]]:
    """The registry of the built-ins plus ``entry_points``, and the plugin warnings it gave."""
    with pytest.warns(PluginWarning) as caught:
        reg = Registry(entry_points=entry_points)
    return reg, [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]


def assert_disabled(reg: Registry, warned: list[str], name: str, *reason: str) -> str:
    """``name`` failed with one one-line warning and one error holding ``reason``, and registered nothing."""
    [error] = [e for e in reg.errors if e.plugin == name]
    for fragment in reason:
        assert fragment in error.error, error.error
    [line] = [w for w in warned if f"'{name}'" in w]
    assert "\n" not in line and error.error in line and "uninstall" in line.lower() and "fix" in line, line
    assert reg.pm.get_plugin(name) is None
    assert name not in dict(reg.plugins())
    assert [e.name for kind in KINDS for e in reg.entries(kind) if e.plugin == name] == []
    # not half loaded: the names its other hooks added are gone too
    assert "extra_schedule" not in reg.names("mask scheduler") and "extra_task" not in reg.names("task")
    return line


def assert_others_work(reg: Registry) -> None:
    """The built-ins and the good plugin are all registered, and a built-in still builds."""
    assert reg.names("task")[:10] == TEN
    assert {"vq3d", "vq2d"} <= set(reg.names("tokenizer"))
    assert reg.build("task", "fp", cond_frames=5).cond_frames == 5
    assert reg.build("mask scheduler", "cosine").ratio(0.0) == 1
    assert "still" in reg.names("task") and "flat" in reg.names("mask scheduler")
    assert reg.entry("task", "still").plugin == "good_plugin"


#: (case, plugin source, fragments of the reason). Past import, each plugin also adds a schedule (EXTRA)
#: that must not stay.
BROKEN = [
    # import error (a missing dependency)
    ("import_error", "raise ImportError('missing dependency xyz')\n",
     ("import", "ImportError", "missing dependency xyz")),
    # sys.exit() on import used to end the whole CLI silently
    ("exit_on_import", "import sys\nsys.exit('plugin says bye')\n", ("import", "SystemExit", "plugin says bye")),
    # SystemExit inside the hook call
    ("exit_in_hook", EXTRA + "\n@hookimpl\ndef magvit_add_tasks():\n    raise SystemExit(3)\n",
     ("magvit_add_tasks", "SystemExit", "3")),
    # an exception inside a hook call, after another hook of the plugin added a valid task
    ("raise_in_hook", EXTRA + "\nfrom magvit.tasks import FramePrediction\n\nclass Extra(FramePrediction):\n"
     "    name = 'extra_task'\n\n@hookimpl\ndef magvit_add_tasks():\n    return {'extra_task': Extra}\n\n"
     "@hookimpl\ndef magvit_add_tokenizers():\n    raise RuntimeError('boom')\n",
     ("magvit_add_tokenizers", "RuntimeError", "boom")),
    # a hook implementation whose signature the spec does not have (pluggy refuses it at register time)
    ("wrong_signature", EXTRA + "\n@hookimpl\ndef magvit_add_tasks(config):\n    return {}\n",
     ("register", "magvit_add_tasks(config)", "config")),
    # a hook returning something that is not a mapping
    ("not_a_mapping", EXTRA + "\n@hookimpl\ndef magvit_add_tasks():\n    return ['fp2']\n",
     ("magvit_add_tasks", "list", "mapping")),
    # a name that is not a string
    ("name_not_str", EXTRA + "\n@hookimpl\ndef magvit_add_tasks():\n    from magvit.tasks import FramePrediction\n"
     "    return {7: FramePrediction}\n", ("magvit_add_tasks", "7", "str")),
    # a factory that is not callable
    ("not_callable", EXTRA + "\n@hookimpl\ndef magvit_add_tokenizers():\n    return {'tok': 42}\n",
     ("tokenizer 'tok'", "not callable", "42")),
    # a task factory returning junk used to be listed as healthy and crash `magvit tasks`
    ("task_junk", EXTRA + "\n@hookimpl\ndef magvit_add_tasks():\n    return {'junk': object}\n",
     ("task 'junk'", "object", "Task", "condition")),
    # a task factory that cannot build a default task
    ("task_factory_raises",
     EXTRA + "\n@hookimpl\ndef magvit_add_tasks():\n    return {'needs_args': lambda stride: stride}\n",
     ("task 'needs_args'", "TypeError", "stride")),
    # a task whose attributes have the wrong types
    ("task_bad_field", EXTRA + "\nfrom magvit.tasks import FramePrediction\n\nclass Bad(FramePrediction):\n"
     "    name = 'bad'\n    uses_class = 'yes'\n\n@hookimpl\ndef magvit_add_tasks():\n    return {'bad': Bad}\n",
     ("task", "uses_class", "bool", "'yes'")),
    # a task registered under a key that differs from its name
    ("task_name_mismatch", EXTRA + "\nfrom magvit.tasks import FramePrediction\n\n@hookimpl\n"
     "def magvit_add_tasks():\n    return {'fp_alias': FramePrediction}\n", ("task 'fp_alias'", "name", "'fp'")),
]


@pytest.mark.parametrize(("case", "source", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_plugin_is_disabled_alone(plugin: Write, case: str, source: str, reason: tuple[str, ...]) -> None:
    """Each way a plugin can break disables that plugin only, with one warning naming it and the reason."""
    bad = plugin(f"bad_{case}", source)
    good = plugin("good_plugin", GOOD)
    reg, warned = load(bad, good)
    assert len(warned) == 1, warned
    assert_disabled(reg, warned, f"bad_{case}", *reason)
    assert [e.plugin for e in reg.errors] == [f"bad_{case}"]
    assert_others_work(reg)


def test_duplicate_builtin_name_keeps_builtin(plugin: Write) -> None:
    """A plugin re-registering the built-in 'fp' is disabled as a whole; the built-in 'fp' stays."""
    dup = plugin("dup_fp_plugin", EXTRA + """
@hookimpl
def magvit_add_tasks():
    from magvit.tasks import FramePrediction
    return {"fp": FramePrediction}
""")
    reg, warned = load(dup, plugin("good_plugin", GOOD))
    line = assert_disabled(reg, warned, "dup_fp_plugin", "task 'fp'", "magvit.tasks")
    assert "built-in" in line
    assert reg.entry("task", "fp").plugin == "magvit.tasks"
    assert_others_work(reg)


def test_duplicate_between_plugins_keeps_first(plugin: Write) -> None:
    """Two third-party plugins adding one name: the first keeps it, the later one is disabled whole (its
    valid, non-clashing task too), named with the first."""
    good = plugin("good_plugin", GOOD)
    later = plugin("later_plugin", EXTRA + """
from magvit.tasks import FramePrediction

class Other(FramePrediction):
    name = "other"

@hookimpl
def magvit_add_tasks():
    return {"other": Other, "still": FramePrediction}
""")
    reg, warned = load(good, later)
    assert_disabled(reg, warned, "later_plugin", "task 'still'", "good_plugin")
    assert "other" not in reg.names("task")
    assert_others_work(reg)


def test_same_plugin_name_twice(plugin: Write) -> None:
    """Two entry points with one plugin name but different modules: the second is disabled, named."""
    good = plugin("good_plugin", GOOD)
    plugin("impostor", EXTRA)
    clash = EntryPoint(name="good_plugin", value="impostor", group="magvit")
    reg, warned = load(good, clash)
    assert len(warned) == 1 and "'good_plugin'" in warned[0], warned
    [error] = reg.errors
    assert error.plugin == "good_plugin" and "already" in error.error
    assert "extra_schedule" not in reg.names("mask scheduler")
    assert_others_work(reg)


# -- as a user sees it ---------------------------------------------------------------------------------

EXITS_ON_IMPORT = "import sys\nsys.exit()\n"
DUPLICATES_FP = """
from magvit import hookimpl
from magvit.tasks import FramePrediction

@hookimpl
def magvit_add_tasks():
    return {"fp": FramePrediction}
"""
JUNK_TASK = """
from magvit import hookimpl

@hookimpl
def magvit_add_tasks():
    return {"junk": dict}
"""


def install_dist(root: Path, name: str, source: str) -> None:
    """A distribution ``<name> 0.1`` with a plugin module ``<name>`` in the ``magvit`` entry-point group."""
    (root / f"{name}.py").write_text(source)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[magvit]\n{name} = {name}\n")


def run_magvit(root: Path, command: str, warned: dict[str, tuple[str, ...]]) -> tuple[dict[str, str], str]:
    """``magvit COMMAND`` with the distributions in ``root`` installed: it succeeds, and stderr holds exactly
    one warning line per broken plugin (naming it, its distribution, the reason and what to do) and no
    traceback. Returns the rows of the printed table by their first column, and what follows the table."""
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    res = subprocess.run([sys.executable, "-m", "magvit.cli", command], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)}, cwd=root, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == len(warned), res.stderr
    for name, reason in warned.items():
        [line] = [w for w in lines if w.startswith(f"magvit: warning: plugin '{name}' ({name} 0.1) is disabled: ")]
        assert f"pip uninstall {name}" in line and "fix the plugin" in line, line
        for fragment in reason:
            assert fragment in line, line
    table, _, rest = res.stdout.partition("\n\n")  # plugins that failed to load follow after a blank line
    return {row.split()[0]: row for row in table.splitlines()[2:]}, rest


def test_cli_plugins_with_broken_installed_plugins(tmp_path: Path) -> None:
    """`magvit plugins` with a plugin calling sys.exit() on import (the CLI used to end silently, exit 0,
    no output) and one re-registering the built-in 'fp' (used to fail): both reported, the rest listed."""
    install_dist(tmp_path, "exits_on_import", EXITS_ON_IMPORT)
    install_dist(tmp_path, "duplicates_fp", DUPLICATES_FP)
    rows, rest = run_magvit(tmp_path, "plugins", {"exits_on_import": ("importing it raised SystemExit",),
                                                  "duplicates_fp": ("task 'fp'", "'magvit.tasks'")})
    # tsr: the repo's example plugin
    assert list(rows) == ["magvit.tasks", "magvit.masking", "magvit.samplers", "magvit.tokenizers",
                          "magvit.pretrained", "tsr"]
    assert "task:fp" in rows["magvit.tasks"]
    failed = rest.splitlines()
    assert failed[0].startswith("plugins that failed to load") and "uninstall or fix" in failed[0]
    assert sorted(line.split()[0] for line in failed[1:]) == ["duplicates_fp", "exits_on_import"]



def test_cli_tasks_with_junk_task_factory(tmp_path: Path) -> None:
    """`magvit tasks` with a task factory returning junk (it used to be listed as healthy and crash the
    command with a traceback): the plugin is disabled, the other tasks are listed."""
    install_dist(tmp_path, "junk_task", JUNK_TASK)
    rows, _ = run_magvit(tmp_path, "tasks", {"junk_task": ("task 'junk'", "not a Task")})
    assert list(rows) == [*TEN, "unc", "tsr"]
    assert rows["fp"].split()[:4] == ["fp", "fp", "False", "True"]
