"""Commands that look before a run: ``datasets``, ``models``, ``partition``, ``config``.

``datasets``, ``models`` and ``partition`` are plain functions that
:mod:`fedpeft.cli` registers on its app; ``config show`` is a command of
:data:`config_app`, which it adds as ``fedpeft config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fedpeft.cli_console import (
    ConfigArg,
    SetOption,
    Ui,
    VerboseOption,
    failures,
    get_ui,
    setup_logging,
    user_errors,
)
from fedpeft.config import load_config

if TYPE_CHECKING:
    from fedpeft.experiment import Experiment

config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)


# --- listings -------------------------------------------------------------------------


def datasets(ctx: typer.Context) -> None:
    """List the shipped corpora (data.corpus)."""
    from fedpeft.data import available_corpora

    images = [
        (
            "fashion-mnist",
            "Fashion-MNIST, 10 classes, 60,000 + 10,000 grey 28×28 images "
            "(Debian's dataset-fashion-mnist); with an image backbone",
        )
    ]
    table = _listing(
        "Corpora (data.corpus)",
        available_corpora() + images,
        "Your own data: csv:PATH or jsonl:PATH with text and label columns; "
        "images as npz:PATH, images:DIR (a folder per class) or idx:DIR "
        "(MNIST-format files).",
    )
    get_ui(ctx).out.print(table)


def models(ctx: typer.Context) -> None:
    """List the registered backbones (model.backbone)."""
    from fedpeft.models import available_backbones

    table = _listing(
        "Backbones (model.backbone)",
        available_backbones(),
        "Or the path of a local Hugging Face model directory.",
    )
    get_ui(ctx).out.print(table)


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


def partition(
    ctx: typer.Context,
    config: ConfigArg = None,
    overrides: SetOption = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write the label-mix chart to this PNG file."),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Show how the configured partitioner splits the data across clients.

    Errors are reported as by [bold]fedpeft run[/]: a configuration error exits
    with code 2, any other failure with code 1, without a traceback unless
    --verbose.
    """
    from fedpeft.experiment import build_experiment

    ui = get_ui(ctx)
    if verbose:
        setup_logging(ui.err, verbose=True)
    with failures(ui, verbose=verbose, title="partition failed"), user_errors(ui):
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

    ui = get_ui(ctx)
    with user_errors(ui):
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
