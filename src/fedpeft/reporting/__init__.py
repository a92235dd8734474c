"""Reporting: rich tables and PNG plots of finished runs.

Read a run back with :func:`load_run`, print it with :func:`render_run_summary` or
compare several with :func:`render_comparison`; :func:`plot_run` and
:func:`plot_compare` write PNGs (matplotlib is imported only when plotting).
"""

from fedpeft.reporting.compare import (
    RunResult,
    comparison_rows,
    comparison_table,
    fraction_of_full,
    human_bytes,
    load_run,
    load_runs,
    render_comparison,
    render_run_summary,
    rounds_table,
)
from fedpeft.reporting.plots import plot_compare, plot_run

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
