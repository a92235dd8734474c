"""Live display of a running experiment: progress bars and the latest rounds."""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from fedpeft.reporting.formatting import accuracy
from fedpeft.reporting.tables import ROUND_COLUMNS, round_cells, rounds_table


class RunView:
    """Shows the events of ``run_experiment``: a progress bar per run or baseline
    phase and a live table of the last rounds; on a console that is not a
    terminal (a log file, CI) it prints one line per round and phase instead."""

    def __init__(self, console: Console, rows: int = 8) -> None:
        self.console = console
        self.interactive = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(finished_text=Text("✓", style="green")),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.recent: deque[dict[str, Any]] = deque(maxlen=rows)
        self.tasks: dict[str, TaskID] = {}
        self.rounds = 0
        self.live = Live(
            get_renderable=self._render, console=console, refresh_per_second=4
        )

    def __enter__(self) -> RunView:
        if self.interactive:
            self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.interactive:
            self.live.stop()

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "start":
            self._start(payload)
        elif kind == "round":
            self._round(payload)
        elif kind == "phase":
            self._phase(payload)
        elif kind == "progress":
            self._progress(payload)

    def _render(self) -> RenderableType:
        if not self.recent:
            return self.progress
        run = self.recent[-1].get("run", "")
        return Group(
            self.progress,
            rounds_table(list(self.recent), title=f"{run}: latest rounds"),
        )

    def _task(self, name: str, total: int | None = None) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        return self.tasks[name]

    def _start(self, payload: dict[str, Any]) -> None:
        self.rounds = int(payload.get("rounds", 0))
        for name in payload.get("runs", ["federated"]):
            total = self.rounds if name == "federated" else None
            task = self._task(name, total)
            if name != "federated":
                self.progress.update(task, description=f"[dim]{name} (waiting)")
                self.progress.stop_task(task)

    def _round(self, record: dict[str, Any]) -> None:
        run = str(record.get("run", "federated"))
        task = self._task(run, self.rounds)
        if self._total(task) is None:
            self.progress.update(task, total=self.rounds)
        acc = record.get("test_accuracy")
        label = f"{run}  acc {accuracy(acc)}" if acc is not None else None
        self.progress.update(
            task, completed=int(record.get("round", 0)), description=label
        )
        if self.recent and self.recent[-1].get("run") != run:
            self.recent.clear()
        self.recent.append(record)
        if not self.interactive:
            self.console.print(_round_line(record, self.rounds), highlight=False)

    def _phase(self, payload: dict[str, Any]) -> None:
        name = str(payload.get("name"))
        task = self._task(name)
        if payload.get("status") == "start":
            self.progress.start_task(task)
            self.progress.update(task, description=name)
            if not self.interactive:
                self.console.print(f"{name}: started", highlight=False)
            return
        acc = accuracy((payload.get("metrics") or {}).get("test_accuracy"))
        total = self._total(task) or 1
        self.progress.update(
            task, total=total, completed=total, description=f"{name}  acc {acc}"
        )
        if not self.interactive:
            self.console.print(f"{name} done: test acc {acc}", highlight=False)

    def _progress(self, payload: dict[str, Any]) -> None:
        """A step of long preparatory work (FedSP's distillation)."""
        name, done = str(payload["name"]), int(payload["completed"])
        total = int(payload["total"])
        self.progress.update(self._task(name, total), completed=done, total=total)
        tenth = max(1, total // 10)
        if not self.interactive and (done % tenth == 0 or done == total):
            self.console.print(f"{name}: {done}/{total}", highlight=False)

    def _total(self, task: TaskID) -> float | None:
        return next(t.total for t in self.progress.tasks if t.id == task)


def _round_line(record: dict[str, Any], rounds: int) -> str:
    cells = round_cells(record)
    parts = [
        f"{c} {v}"
        for c, v in zip(ROUND_COLUMNS[1:], cells[1:], strict=True)
        if v != "—"
    ]
    return f"{record.get('run')} round {cells[0]}/{rounds}: " + ", ".join(parts)
