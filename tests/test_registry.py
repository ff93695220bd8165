"""The pluggy registry: built-ins, entry points, error paths (README "Writing a plugin")."""


import pluggy
import pytest

from magvit import registry
from magvit.protocols import MaskScheduler, Task
from magvit.registry import PluginWarning, Registry

TEN = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"]


def test_builtin_tasks_in_order():
    assert registry.task_names()[:10] == TEN


@pytest.mark.parametrize("name", TEN)
def test_builtin_tasks_follow_protocol(name):
    task = registry.get_task(name)
    assert isinstance(task, Task)
    assert task.name == name and task.prompt == name


def test_schedulers_follow_protocol():
    for name in registry.mask_scheduler_names():
        assert isinstance(registry.get_mask_scheduler(name), MaskScheduler)


def test_unknown_name_lists_known():
    with pytest.raises(KeyError, match="registered tasks: fp, fi, opc"):
        registry.get_task("nope")
    with pytest.raises(KeyError, match="cosine"):
        registry.get_mask_scheduler("nope")


def test_task_kwargs_reach_constructor():
    assert registry.get_task("fp", cond_frames=5).cond_frames == 5


def test_duplicate_name_keeps_first_and_names_both_plugins(plugin_dir):
    ep = plugin_dir(
        "dup_fp_plugin",
        """
        from magvit import hookimpl
        from magvit.tasks import FramePrediction

        @hookimpl
        def magvit_add_tasks():
            return {"fp": FramePrediction}
        """,
    )
    with pytest.warns(PluginWarning, match=r"'dup_fp_plugin'.*disabled: task 'fp' is already registered by plugin "
                      r"'magvit.tasks'"):
        reg = Registry(entry_points=[ep])
    assert [e.plugin for e in reg.errors] == ["dup_fp_plugin"]
    assert reg.entry("task", "fp").plugin == "magvit.tasks"


def test_broken_plugin_reported_others_load(plugin_dir):
    broken = plugin_dir("broken_plugin", "raise ImportError('missing dependency xyz')\n")
    good = plugin_dir(
        "good_plugin",
        """
        import attrs
        from magvit import hookimpl

        @attrs.frozen
        class Flat:
            name = "flat"
            def ratio(self, progress):
                import torch
                return 1 - torch.as_tensor(progress, dtype=torch.float64) * 0.5

        @hookimpl
        def magvit_add_mask_schedulers():
            return {"flat": Flat}
        """,
    )
    with pytest.warns(UserWarning, match="broken_plugin.*missing dependency xyz"):
        reg = Registry(entry_points=[broken, good])
    assert [e.plugin for e in reg.errors] == ["broken_plugin"]
    assert "flat" in reg.names("mask scheduler")
    assert reg.names("task")[:10] == TEN


def test_raising_hook_reported(plugin_dir):
    ep = plugin_dir(
        "raising_plugin",
        """
        from magvit import hookimpl

        @hookimpl
        def magvit_add_tasks():
            raise RuntimeError("boom")
        """,
    )
    with pytest.warns(UserWarning, match="raising_plugin.*boom"):
        reg = Registry(entry_points=[ep])
    assert reg.errors[0].plugin == "raising_plugin" and "boom" in reg.errors[0].error
    assert reg.names("task") == [*TEN, "unc"]  # the built-ins, unc (the B-UNC baseline's task) included


def test_builtins_register_through_hooks():
    reg = Registry(entry_points=[])
    impls = {impl.plugin_name for impl in reg.pm.hook.magvit_add_tasks.get_hookimpls()}
    assert impls == {"magvit.tasks"}
    assert {e.plugin for e in reg.entries("task")} == {"magvit.tasks"}


def test_third_party_tsr_plugin_installed():
    # plugins/magvit-tsr is installed by `make test`; it registers only through the entry-point group.
    entry = registry.default_registry().entry("task", "tsr")
    assert entry.plugin == "tsr" and entry.source.startswith("magvit-tsr")
    assert "tsr" in registry.task_names()
    assert isinstance(registry.get_task("tsr"), Task)


def test_misspelt_hook_warns_with_the_closest_name_and_the_plugin_stays(plugin_dir):
    ep = plugin_dir(
        "misspelt_plugin",
        """
        from magvit import hookimpl
        from magvit.masking import CosineSchedule

        @hookimpl
        def magvit_add_task():
            return {}

        @hookimpl
        def magvit_add_mask_schedulers():
            return {"cosine2": CosineSchedule}
        """,
    )
    with pytest.warns(PluginWarning, match=r"'misspelt_plugin'.*hook 'magvit_add_task' matches no magvit hook spec"
                      r".*did you mean 'magvit_add_tasks'\?") as record:
        reg = Registry(entry_points=[ep])
    assert len([w for w in record if "misspelt_plugin" in str(w.message)]) == 1
    assert reg.errors == []
    assert [(p.plugin, "magvit_add_task" in p.problem) for p in reg.problems] == [("misspelt_plugin", True)]
    assert reg.entry("mask scheduler", "cosine2").plugin == "misspelt_plugin"
    with pytest.raises(pluggy.PluginValidationError, match="magvit_add_task"):
        reg.pm.check_pending()  # the rule applied is pluggy's own


def test_optional_unknown_hook_is_not_a_problem(plugin_dir):
    ep = plugin_dir(
        "optional_hook_plugin",
        """
        from magvit import hookimpl

        @hookimpl(optionalhook=True)
        def magvit_add_samplers_later():
            return {}
        """,
    )
    reg = Registry(entry_points=[ep])
    assert reg.problems == [] and reg.errors == []
    assert ("optional_hook_plugin", "unknown distribution") in reg.plugins()


def test_plugins_command_lists_problems(plugin_dir, monkeypatch, capsys):
    ep = plugin_dir(
        "typo_plugin",
        """
        from magvit import hookimpl

        @hookimpl
        def magvit_add_tokeniser():
            return {}
        """,
    )
    monkeypatch.setattr(registry, "default_registry", lambda: reg)
    with pytest.warns(PluginWarning, match="typo_plugin"):
        reg = Registry(entry_points=[ep])
    from magvit.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    problems = out.split("plugin problems")[1].splitlines()
    assert any("typo_plugin" in line and "'magvit_add_tokeniser'" in line and "'magvit_add_tokenizers'" in line
               for line in problems)
