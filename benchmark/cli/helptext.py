"""Plain, accurate help text for every command (issue 13).

Typer's rich help showed `{path}` for arguments, `<bool>` for flags and ate anything in square brackets
(`[default: CPUs]` became ` .`). We render click's plain help instead (right for CI logs and pipes too) and
tidy the command tree once, after every command module has registered: arguments read `PATH`, not `{path}`.
"""

from __future__ import annotations

from typing import Any

import typer

# Typer vendors its own click (typer._click), so commands and parameters are recognised by shape, not class.

def _plain_argument(param: Any) -> None:
    name = (param.metavar or param.name or "arg").upper()
    param.metavar = name  # errors say "Missing argument 'PATH'", as the usage line does
    shown = name if param.required else f"[{name}]"
    if param.nargs != 1:
        shown += "..."
    # Instance attributes shadow typer's methods: the usage line reads `PATH`, the arguments section `PATH`.
    param.get_usage_pieces = lambda ctx, shown=shown: [shown]  # type: ignore[method-assign]
    param._rich_display_name = lambda name=name: name  # type: ignore[attr-defined]
    param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


def tidy(command: Any) -> Any:
    """Fix the help of `command` and of every command below it, in place; returns it."""
    for param in command.params:
        if getattr(param, "param_type_name", None) == "argument":
            _plain_argument(param)
    if isinstance(getattr(command, "commands", None), dict):
        for sub in command.commands.values():
            tidy(sub)
    return command


def build(app: Any) -> Any:
    """The click command for a Typer app, with plain help everywhere (sub-apps included)."""
    import typer.main

    _plain_markup(app)
    return tidy(typer.main.get_command(app))


class PlainTyper(typer.Typer):
    """A Typer app whose help is tidied when it runs: `app()` as usual."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("prog_name", "fxbench")
        return build(self)(*args, **kwargs)


def _plain_markup(app: Any) -> None:
    app.rich_markup_mode = None
    for info in app.registered_groups:
        if info.typer_instance is not None:
            _plain_markup(info.typer_instance)
