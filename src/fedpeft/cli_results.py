"""``fedpeft report`` and ``fedpeft export``: what finished runs produced.

Plain functions; :mod:`fedpeft.cli` registers them as commands of its app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from fedpeft.cli_console import get_ui, user_errors
from fedpeft.reporting.compare import render_comparison
from fedpeft.reporting.runs import load_runs


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

    ui = get_ui(ctx)
    with user_errors(ui, ValueError):
        results = load_runs(run_dirs)
    render_comparison(results, ui.out)
    target = out or run_dirs[0] / "plots" / "compare.png"
    if target.is_dir() or not target.suffix:
        target = target / "compare.png"
    with user_errors(ui, ValueError):
        path = plot_compare(run_dirs, target)
    ui.out.print(Text.assemble("comparison plot: ", (str(path), "bold")))


def export(
    ctx: typer.Context,
    run_dir: Annotated[
        Path, typer.Argument(help="A finished run directory (runs/<name>).")
    ],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the adapter.")],
) -> None:
    """Write a run's final adapter in the HF PEFT format (plus its head)."""
    from fedpeft.peft.export import export_adapter, load_run_adapter

    ui = get_ui(ctx)
    with user_errors(ui, ValueError):
        adapter = load_run_adapter(run_dir)
        export_adapter(adapter, out_dir, {"run": str(run_dir)})
    info = (out_dir / "fedpeft.json").read_text(encoding="utf-8")
    ui.out.print(f"[green]exported[/] {run_dir} -> {out_dir}")
    ui.out.print(info, markup=False, highlight=False)
