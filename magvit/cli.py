"""The ``magvit`` command line (jsonargparse).

Every subcommand is a small function; user mistakes (:class:`~magvit.errors.MagvitError`, missing files)
are printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from jsonargparse import ArgumentParser

from magvit.errors import MagvitError


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_tasks() -> str:
    """Table of every registered task: name, prompt, uses_class, needs_video and its plugin."""
    from magvit import registry

    reg = registry.default_registry()
    rows = []
    for entry in reg.entries("task"):
        task = entry.factory()
        rows.append((entry.name, task.prompt, task.uses_class, task.needs_video, f"{entry.plugin} [{entry.source}]"))
    return _table(rows, ("name", "prompt", "uses_class", "needs_video", "plugin"))


def cmd_plugins() -> str:
    """Loaded plugins, what each registered, and plugins that failed to load."""
    from magvit import registry

    reg = registry.default_registry()
    rows = []
    for plugin, source in reg.plugins():
        added = [f"{e.kind}:{e.name}" for kind in ("task", "tokenizer", "mask scheduler") for e in reg.entries(kind)
                 if e.plugin == plugin]
        rows.append((plugin, source, " ".join(added) or "-"))
    out = _table(rows, ("plugin", "source", "registers"))
    if reg.errors:
        out += "\n\nplugins that failed to load:\n" + "\n".join(
            f"  {e.plugin} ({e.source}): {e.error}" for e in reg.errors
        )
    return out


COMMANDS: dict[str, Callable[..., str | None]] = {
    "tasks": cmd_tasks,
    "plugins": cmd_plugins,
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="magvit", description="MAGVIT: masked generative video transformer")
    sub = parser.add_subcommands(dest="command")
    sub.add_subcommand("tasks", ArgumentParser(description=cmd_tasks.__doc__), help=cmd_tasks.__doc__)
    sub.add_subcommand("plugins", ArgumentParser(description=cmd_plugins.__doc__), help=cmd_plugins.__doc__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    cfg = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    command = cfg.command
    try:
        out = COMMANDS[command](**{k: v for k, v in dict(cfg.get(command) or {}).items() if k != "__path__"})
    except (MagvitError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"magvit {command}: error: {msg}", file=sys.stderr)
        return 2
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
