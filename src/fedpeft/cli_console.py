"""What every ``fedpeft`` command shares: the console, logging, errors, arguments.

Results go to stdout, progress, logs and errors to stderr (:class:`Ui`, stored on
the typer context by the app's callback). A user-facing error (a bad config, a
missing file) becomes a red message and exit code 2 (:func:`user_errors`); any
other failure a red message and exit code 1 (:func:`failures`). ``CONFIG.toml``
and ``--set`` are read the same way by every command that takes a configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.text import Text

from fedpeft.config import ConfigError

ConfigArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="CONFIG.toml",
        show_default=False,
        help="TOML run configuration; omitted: the default experiment.",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        show_default=False,
        help="Override a config value, e.g. --set strategy.name=dynamic "
        "(repeatable; values are read as TOML).",
    ),
]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Log at INFO level; show tracebacks of failures."
    ),
]


@dataclass(frozen=True)
class Ui:
    """Where output goes: results to stdout; progress, logs and errors to stderr."""

    out: Console
    err: Console

    def error(self, message: str, title: str = "error") -> None:
        """A red panel with ``message`` taken literally (no rich markup)."""
        self.err.print(
            Panel(
                Text(message),
                title=title,
                title_align="left",
                border_style="red",
                expand=False,
            )
        )


class _CliLogHandler(RichHandler):
    """The root logger's rich handler installed by the CLI (replaced, never stacked)."""


def setup_logging(console: Console, verbose: bool) -> None:
    """Log to ``console`` through one rich handler, at INFO if ``verbose``."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CliLogHandler)]:
        root.removeHandler(handler)
    handler = _CliLogHandler(
        console=console,
        show_path=False,
        markup=False,
        rich_tracebacks=True,
        log_time_format="[%X]",
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def get_ui(ctx: typer.Context) -> Ui:
    """The :class:`Ui` the app's callback stored (a fresh one if none)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Ui) else Ui(Console(), Console(stderr=True))


def _user_error_types() -> tuple[type[Exception], ...]:
    from fedpeft.data import PartitionError
    from fedpeft.rundir.checkpoint import CheckpointError

    return ConfigError, PartitionError, CheckpointError, FileNotFoundError


@contextmanager
def user_errors(ui: Ui, *extra: type[Exception]) -> Iterator[None]:
    """Turn a user-facing error into a red message and exit code 2, no traceback."""
    try:
        yield
    except (*_user_error_types(), *extra) as err:
        ui.error(str(err))
        raise typer.Exit(2) from None


@contextmanager
def failures(ui: Ui, *, verbose: bool, title: str) -> Iterator[None]:
    """Turn any other error into a red message and exit code 1.

    The message is ``Type: message``; the traceback is printed only with
    ``verbose`` (otherwise the message says how to see it). ``typer.Exit``
    (from :func:`user_errors` inside) passes through.
    """
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:
        if verbose:
            ui.err.print_exception(show_locals=False)
        hint = "" if verbose else "\n(run again with --verbose for the traceback)"
        ui.error(f"{type(err).__name__}: {err}{hint}", title=title)
        raise typer.Exit(1) from None
