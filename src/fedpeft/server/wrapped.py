"""The server-algorithm contract, and a base for algorithms that add to another.

:class:`Server` is what :class:`~fedpeft.engine.loop.RoundLoop` drives.
:class:`WrappedServer` passes every call to an inner server; a subclass
overrides only what it changes (the black-box search's merge, FedSP's
server-side step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedpeft.messages import Instruction, Task
from fedpeft.server.aggregators import Aggregator, Metrics
from fedpeft.types import ClientUpdate, Params


class Server(Protocol):
    """A server algorithm: what each client is sent, how replies are merged."""

    aggregator: Aggregator

    @property
    def eligible(self) -> list[int]: ...

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]: ...

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]: ...

    def merge_warm_start(
        self, task: Task, params: Params, replies: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]: ...

    def eval_state(self, params: Params) -> tuple[Params, tuple[int, int] | None]: ...

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]: ...

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None: ...


@dataclass
class WrappedServer:
    """A server that passes every call to ``inner`` (subclasses override)."""

    inner: Server
    aggregator: Aggregator = field(init=False)

    def __post_init__(self) -> None:
        self.aggregator = self.inner.aggregator

    @property
    def eligible(self) -> list[int]:
        return self.inner.eligible

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        return self.inner.instructions(rnd, task, params, selected)

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        return self.inner.merge(rnd, params, updates)

    def merge_warm_start(
        self, task: Task, params: Params, replies: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        return self.inner.merge_warm_start(task, params, replies)

    def eval_state(self, params: Params) -> tuple[Params, tuple[int, int] | None]:
        return self.inner.eval_state(params)

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.inner.load_state_dict(state)
