"""Reporting: rich tables and PNG plots of finished runs.

Read a run back with :func:`load_run`, print it with :func:`render_run_summary` or
compare several with :func:`render_comparison`; :func:`plot_run` and
:func:`plot_compare` write PNGs (matplotlib is imported only when plotting).
"""

from fedpeft.reporting.compare import (
    comparison_rows,
    comparison_table,
    render_comparison,
)
from fedpeft.reporting.formatting import fraction_of_full, human_bytes
from fedpeft.reporting.plots import plot_compare, plot_run
from fedpeft.reporting.runs import RunResult, load_run, load_runs
from fedpeft.reporting.tables import render_run_summary, rounds_table

__all__ = [
    "RunResult",
    "comparison_rows",
    "comparison_table",
    "fraction_of_full",
    "human_bytes",
    "load_run",
    "load_runs",
    "plot_compare",
    "plot_run",
    "render_comparison",
    "render_run_summary",
    "rounds_table",
]
