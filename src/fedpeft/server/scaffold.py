"""SCAFFOLD's server side (Karimireddy et al. 2020, Alg. 1), around the
uniform server.

The server keeps the global control variate ``c`` and, in this simulation,
every client's ``c_k`` (a deployed client would keep its own; the server never
uses one ``c_k`` beyond the subtraction below, but it does see them, so secure
aggregation and DP refuse SCAFFOLD). Each round:

* client k is sent the global state plus the correction ``c − c_k`` under
  :data:`~fedpeft.client.scaffold.CONTROL` keys;
* it returns ΔP_k and its new control variate ``c_k⁺`` (the mean raw gradient
  of its local steps) under the same keys;
* the wrapped server merges the ΔP_k (any strategy, momentum included), and
  ``c ← c + (1/N) Σ_{k∈S} (c_k⁺ − c_k)``, ``c_k ← c_k⁺``.

A client that fails or is rejected keeps its old ``c_k``. Communication
doubles: the correction travels down and the control variate up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpeft.aggregation import global_norm
from fedpeft.client.scaffold import CONTROL, split_control
from fedpeft.messages import Instruction, Task
from fedpeft.server.aggregators import Aggregator, Metrics
from fedpeft.server.uniform import UniformServer
from fedpeft.types import ClientUpdate, Params

GLOBAL = "scaffold/c/"
CLIENT = "scaffold/client/"
"""Key prefixes of ``c`` and of ``c_k`` (``scaffold/client/<k>/<tensor>``) in
the checkpointed server state."""


@dataclass
class ScaffoldServer:
    """The uniform server with SCAFFOLD's control variates (module docstring).

    Attributes:
        inner: The server whose strategy merges the model deltas.
        initial: The global state's layout (its keys and shapes).
    """

    inner: UniformServer
    initial: Params
    control: Params = field(default_factory=dict)
    client_controls: dict[int, Params] = field(default_factory=dict)
    aggregator: Aggregator = field(init=False)

    def __post_init__(self) -> None:
        self.aggregator = self.inner.aggregator
        if not self.control:
            self.control = {k: np.zeros_like(v) for k, v in self.initial.items()}

    @property
    def eligible(self) -> list[int]:
        return self.inner.eligible

    def _own(self, k: int) -> Params:
        return self.client_controls.get(k) or {
            n: np.zeros_like(v) for n, v in self.control.items()
        }

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        out = self.inner.instructions(rnd, task, params, selected)
        if task != "fit":
            return out
        return [
            dataclasses.replace(
                ins,
                payload={
                    **ins.payload,
                    **{
                        CONTROL + n: (c - own[n]).astype(np.float32)
                        for n, c in self.control.items()
                    },
                },
            )
            for ins in out
            for own in [self._own(ins.client_id)]
        ]

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """The wrapped merge of the ΔP_k, then the control-variate update.

        Raises:
            ValueError: if an update lacks its control variate or holds one of
                the wrong shape or with non-finite values.
        """
        model_updates, controls = [], {}
        for u in updates:
            delta, control = split_control(u.delta)
            if set(control) != set(self.control):
                raise ValueError(
                    f"round {rnd}: client {u.client_id}'s reply carries control "
                    f"tensors {sorted(control)}, expected {sorted(self.control)}; "
                    "is it a SCAFFOLD client?"
                )
            for n, v in control.items():
                if v.shape != self.control[n].shape or not np.isfinite(v).all():
                    raise ValueError(
                        f"round {rnd}: client {u.client_id}'s control tensor {n!r} "
                        f"has shape {v.shape} (expected {self.control[n].shape}) or "
                        "non-finite values"
                    )
            model_updates.append(dataclasses.replace(u, delta=delta))
            controls[u.client_id] = control
        new, metrics = self.inner.merge(rnd, params, model_updates)
        num = self.inner.num_clients
        for k, control in controls.items():
            old = self._own(k)
            for name, value in control.items():
                self.control[name] = (
                    self.control[name] + (value - old[name]) / num
                ).astype(np.float32)
            self.client_controls[k] = {
                name: np.asarray(v, np.float32) for name, v in control.items()
            }
        return new, {**metrics, "scaffold_control_norm": global_norm(self.control)}

    def merge_warm_start(
        self, task: Task, params: Params, replies: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        return self.inner.merge_warm_start(task, params, replies)

    def eval_state(self, params: Params) -> tuple[Params, None]:
        return self.inner.eval_state(params)

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        state = dict(self.inner.state_dict())
        state.update({GLOBAL + n: v for n, v in self.control.items()})
        for k, control in self.client_controls.items():
            state.update({f"{CLIENT}{k}/{n}": v for n, v in control.items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore ``c``, every ``c_k`` and the wrapped server's state.

        Raises:
            ValueError: if the state lacks the global control variate (it was
                written by a run without SCAFFOLD).
        """
        control = {
            k[len(GLOBAL) :]: np.asarray(v, np.float32)
            for k, v in state.items()
            if k.startswith(GLOBAL)
        }
        if set(control) != set(self.initial):
            raise ValueError(
                "the checkpoint holds no SCAFFOLD control variates for this "
                "adapter; was it written with strategy.scaffold = false?"
            )
        clients: dict[int, Params] = {}
        for key, value in state.items():
            if key.startswith(CLIENT):
                k, _, name = key[len(CLIENT) :].partition("/")
                clients.setdefault(int(k), {})[name] = np.asarray(value, np.float32)
        self.control, self.client_controls = control, clients
        self.inner.load_state_dict(
            {
                k: v
                for k, v in state.items()
                if not (k.startswith(GLOBAL) or k.startswith(CLIENT))
            }
        )
