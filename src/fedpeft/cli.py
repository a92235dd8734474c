"""The ``fedpeft`` command line: run experiments, compare runs, list components.

Thin by design: commands build a :class:`~fedpeft.config.RunConfig` and call library
functions; tables and plots come from :mod:`fedpeft.reporting`. Heavy modules (torch,
transformers, matplotlib) are imported only by the commands that need them.

Exit codes: 0 success, 1 a run failed, 2 a usage or configuration error (shown
without a traceback), 130 interrupted.

Commands live by what they do: this module holds the app, its callback and
``fedpeft run``; :mod:`fedpeft.cli_results` (report, export),
:mod:`fedpeft.cli_inspect` (datasets, models, partition, config show) and
:mod:`fedpeft.cli_privacy` hold the rest, and :mod:`fedpeft.cli_console` the
console, logging and error handling they share.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from fedpeft import __version__
from fedpeft.cli_console import (
    ConfigArg,
    SetOption,
    Ui,
    VerboseOption,
    get_ui,
    setup_logging,
    user_errors,
)
from fedpeft.cli_inspect import config_app, datasets, models, partition
from fedpeft.cli_privacy import privacy_app
from fedpeft.cli_results import export, report
from fedpeft.config import RunConfig, load_config
from fedpeft.reporting.live import RunView
from fedpeft.reporting.tables import render_run_summary

app = typer.Typer(
    name="fedpeft",
    help="Federated parameter-efficient fine-tuning of frozen foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(config_app, name="config")
app.add_typer(privacy_app, name="privacy")


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
    setup_logging(ui.err, verbose=False)


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
    verbose: VerboseOption = False,
) -> None:
    """Run a federated experiment and its baselines; write results to the run directory.

    The run directory (output_dir/name) receives config.toml, metrics.jsonl,
    summary.json, the final adapter and plots. A directory that already holds a
    run is refused unless --resume or --overwrite says what to do with it.
    """
    ui = get_ui(ctx)
    if verbose:
        setup_logging(ui.err, verbose=True)
    with user_errors(ui):
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
    compute = f"{m.device}, {_precision(m.precision, m.device)}" + (
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


def _precision(setting: str, device: str) -> str:
    """``"bf16"``, or ``"fp32 (auto: no bf16 hardware)"`` where auto chose."""
    from fedpeft.models.device import resolve_device
    from fedpeft.models.precision import resolve_precision

    try:
        resolved = resolve_precision(setting, resolve_device(device))
    except ValueError:
        return setting  # the run itself reports the bad device
    if setting != "auto":
        return resolved
    return "bf16 (auto)" if resolved == "bf16" else "fp32 (auto: no bf16 hardware)"


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
        with user_errors(ui):
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


# --- the other commands, in the order of `fedpeft --help` ---------------------------

app.command()(report)
app.command()(export)
app.command()(datasets)
app.command()(models)
app.command()(partition)

from fedpeft.cli_flower import deploy, node  # noqa: E402 - after the app exists

app.command()(deploy)
app.command()(node)

if __name__ == "__main__":
    app()
