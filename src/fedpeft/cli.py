"""The ``fedpeft`` command line: run experiments, compare runs, list components.

Thin by design: commands build a :class:`~fedpeft.config.RunConfig` and call library
functions; tables and plots come from :mod:`fedpeft.reporting`. Heavy modules (torch,
transformers, matplotlib) are imported only by the commands that need them.

Exit codes: 0 success, 1 a run failed, 2 a usage or configuration error (shown
without a traceback), 130 interrupted.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fedpeft import __version__
from fedpeft.cli_privacy import privacy_app
from fedpeft.config import ConfigError, RunConfig, load_config
from fedpeft.reporting.compare import (
    load_runs,
    render_comparison,
    render_run_summary,
)
from fedpeft.reporting.live import RunView

if TYPE_CHECKING:
    from fedpeft.experiment import Experiment

app = typer.Typer(
    name="fedpeft",
    help="Federated parameter-efficient fine-tuning of frozen foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(privacy_app, name="privacy")

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


# --- console, logging, errors ---------------------------------------------------------


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


def _setup_logging(console: Console, verbose: bool) -> None:
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


def _ui(ctx: typer.Context) -> Ui:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Ui) else Ui(Console(), Console(stderr=True))


def _user_error_types() -> tuple[type[Exception], ...]:
    from fedpeft.data import PartitionError
    from fedpeft.rundir.checkpoint import CheckpointError

    return ConfigError, PartitionError, CheckpointError, FileNotFoundError


@contextmanager
def _user_errors(ui: Ui, *extra: type[Exception]) -> Iterator[None]:
    """Turn a user-facing error into a red message and exit code 2, no traceback."""
    try:
        yield
    except (*_user_error_types(), *extra) as err:
        ui.error(str(err))
        raise typer.Exit(2) from None


@contextmanager
def _failures(ui: Ui, *, verbose: bool, title: str) -> Iterator[None]:
    """Turn any other error into a red message and exit code 1.

    The message is ``Type: message``; the traceback is printed only with
    ``verbose`` (otherwise the message says how to see it). ``typer.Exit``
    (from :func:`_user_errors` inside) passes through.
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fedpeft {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Federated parameter-efficient fine-tuning of frozen foundation models.

    Start with [bold]fedpeft run[/] (the default experiment), then
    [bold]fedpeft report runs/default[/].
    """
    del version
    ui = Ui(Console(), Console(stderr=True))
    ctx.obj = ui
    _setup_logging(ui.err, verbose=False)


# --- fedpeft run ----------------------------------------------------------------------


@app.command()
def run(
    ctx: typer.Context,
    config: ConfigArg = None,
    overrides: SetOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in the run directory from its last "
            "checkpoint (same config required).",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Delete the run already in the run directory and start again.",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress display; print only the final table."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log at INFO level; show tracebacks of failures."
        ),
    ] = False,
) -> None:
    """Run a federated experiment and its baselines; write results to the run directory.

    The run directory (output_dir/name) receives config.toml, metrics.jsonl,
    summary.json, the final adapter and plots. A directory that already holds a
    run is refused unless --resume or --overwrite says what to do with it.
    """
    ui = _ui(ctx)
    if verbose:
        _setup_logging(ui.err, verbose=True)
    with _user_errors(ui):
        cfg = load_config(config, overrides or [])
        from fedpeft.experiment import check_names

        check_names(cfg)
    if not quiet:
        ui.err.print(describe_config(cfg))
    summary = _execute(
        cfg,
        ui,
        resume=resume,
        overwrite=overwrite,
        quiet=quiet,
        verbose=verbose,
        again=_resume_command(config, overrides or []),
    )
    ui.out.print()
    render_run_summary(summary, ui.out, run_dir=cfg.run_dir)


def describe_config(cfg: RunConfig) -> Text:
    """One line saying what a run will do and where it writes."""
    p, fed = cfg.partition, cfg.federation
    skew = p.summary()
    baselines = ", ".join(cfg.baselines.run) or "none"
    m = cfg.model
    compute = f"{m.device}, {m.precision}" + (
        ", clients batched" if fed.batch_clients else ""
    )
    return Text.assemble(
        (cfg.name, "bold cyan"),
        f": {cfg.peft.method} on {m.backbone} ({compute}), {cfg.data.corpus}; "
        f"{fed.num_clients} clients ({skew}), {cfg.strategy.name}, "
        f"{fed.rounds} rounds, {cfg.strategy.fraction_fit:.0%} of clients per round; "
        f"baselines: {baselines} "
        f"→ {cfg.run_dir}",
    )


def _resume_command(config: Path | None, overrides: list[str]) -> str:
    words = ["fedpeft", "run", *([str(config)] if config else [])]
    for item in overrides:
        words += ["--set", item]
    return shlex.join([*words, "--resume"])


def _execute(
    cfg: RunConfig,
    ui: Ui,
    *,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    verbose: bool,
    again: str,
) -> dict[str, Any]:
    """run_experiment with a live view; failures become messages and exit codes."""
    from fedpeft.engine.runner import run_experiment

    try:
        with _user_errors(ui):
            if quiet:
                return run_experiment(cfg, resume=resume, overwrite=overwrite)
            with RunView(ui.err) as view:
                return run_experiment(
                    cfg, resume=resume, overwrite=overwrite, on_event=view
                )
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        ui.error(
            f"Continue from the last checkpoint with:\n  {again}", title="interrupted"
        )
        raise typer.Exit(130) from None
    except Exception as err:  # a failed run: exit 1 with the reason
        if verbose:
            ui.err.print_exception(show_locals=False)
        hint = "" if verbose else "\n(run again with --verbose for the traceback)"
        ui.error(f"{type(err).__name__}: {err}{hint}", title="run failed")
        raise typer.Exit(1) from None


# --- fedpeft report -------------------------------------------------------------------


@app.command()
def report(
    ctx: typer.Context,
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR...",
            show_default=False,
            help="Finished run directories (each holds summary.json).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            show_default=False,
            help="Where to write the comparison PNG (a file or a directory); "
            "default: FIRST_RUN_DIR/plots/compare.png.",
        ),
    ] = None,
) -> None:
    """Compare finished runs: a table of each run and its baselines, and a plot."""
    from fedpeft.reporting.plots import plot_compare

    ui = _ui(ctx)
    with _user_errors(ui, ValueError):
        results = load_runs(run_dirs)
    render_comparison(results, ui.out)
    target = out or run_dirs[0] / "plots" / "compare.png"
    if target.is_dir() or not target.suffix:
        target = target / "compare.png"
    with _user_errors(ui, ValueError):
        path = plot_compare(run_dirs, target)
    ui.out.print(Text.assemble("comparison plot: ", (str(path), "bold")))


# --- listings -------------------------------------------------------------------------


@app.command()
def export(
    ctx: typer.Context,
    run_dir: Annotated[
        Path, typer.Argument(help="A finished run directory (runs/<name>).")
    ],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the adapter.")],
) -> None:
    """Write a run's final adapter in the HF PEFT format (plus its head)."""
    from fedpeft.peft.export import export_adapter, load_run_adapter

    ui = _ui(ctx)
    with _user_errors(ui, ValueError):
        adapter = load_run_adapter(run_dir)
        export_adapter(adapter, out_dir, {"run": str(run_dir)})
    info = (out_dir / "fedpeft.json").read_text(encoding="utf-8")
    ui.out.print(f"[green]exported[/] {run_dir} -> {out_dir}")
    ui.out.print(info, markup=False, highlight=False)


@app.command()
def datasets(ctx: typer.Context) -> None:
    """List the shipped corpora (data.corpus)."""
    from fedpeft.data import available_corpora

    table = _listing(
        "Corpora (data.corpus)",
        available_corpora(),
        "Your own data: csv:PATH or jsonl:PATH with text and label columns.",
    )
    _ui(ctx).out.print(table)


@app.command()
def models(ctx: typer.Context) -> None:
    """List the registered backbones (model.backbone)."""
    from fedpeft.models import available_backbones

    table = _listing(
        "Backbones (model.backbone)",
        available_backbones(),
        "Or the path of a local Hugging Face model directory.",
    )
    _ui(ctx).out.print(table)


def _listing(title: str, entries: list[tuple[str, str]], caption: str) -> Table:
    table = Table(
        title=title, caption=caption, title_justify="left", caption_justify="left"
    )
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("description")
    for name, description in entries:
        table.add_row(name, description)
    return table


# --- fedpeft config -------------------------------------------------------------------


@app.command()
def partition(
    ctx: typer.Context,
    config: ConfigArg = None,
    overrides: SetOption = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write the label-mix chart to this PNG file."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log at INFO level; show tracebacks of failures."
        ),
    ] = False,
) -> None:
    """Show how the configured partitioner splits the data across clients.

    Errors are reported as by [bold]fedpeft run[/]: a configuration error exits
    with code 2, any other failure with code 1, without a traceback unless
    --verbose.
    """
    from fedpeft.experiment import build_experiment

    ui = _ui(ctx)
    if verbose:
        _setup_logging(ui.err, verbose=True)
    with _failures(ui, verbose=verbose, title="partition failed"), _user_errors(ui):
        cfg = load_config(config, overrides or [])
        _show_partition(build_experiment(cfg), ui, plot)


def _show_partition(exp: Experiment, ui: Ui, plot: Path | None) -> None:
    """Print the per-client table and the mean label skew; write the chart."""
    from fedpeft.data import (
        label_skew,
        partition_table,
        plot_partition,
        render_partition_table,
    )

    cfg = exp.config
    labels = exp.corpus.train.labels
    rows = partition_table(labels, exp.partition, exp.corpus.label_names)
    render_partition_table(rows, ui.out)
    skew = label_skew(labels, exp.partition, exp.num_classes)
    ui.out.print(
        f"{cfg.partition.method} over {len(rows)} clients of {exp.corpus.name}: "
        f"mean label skew (total variation to the global mix) {skew:.3f}"
    )
    if plot is not None:
        path = plot_partition(labels, exp.partition, exp.corpus.label_names, plot)
        ui.out.print(f"label mix per client: {path}")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    config: ConfigArg = None,
    overrides: SetOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Also check that every component name (strategy, method, corpus, "
            "backbone) is registered.",
        ),
    ] = True,
) -> None:
    """Print the resolved configuration (defaults, then CONFIG, then --set) as TOML."""
    import tomli_w

    ui = _ui(ctx)
    with _user_errors(ui):
        cfg = load_config(config, overrides or [])
        if check:
            from fedpeft.experiment import check_names

            check_names(cfg)
    text = tomli_w.dumps(cfg.to_dict())
    if ui.out.is_terminal:
        from rich.syntax import Syntax

        ui.out.print(Syntax(text, "toml", background_color="default"))
    else:  # piped: plain TOML, byte for byte, so it can be saved and reused
        typer.echo(text, nl=False)
