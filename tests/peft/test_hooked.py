"""Hooks on shared modules that serve concurrent per-example calls."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
from torch import nn

from fedpeft.peft.hooked import HookedForward, hooked_forward


def _install(
    model: nn.Linear, current: Callable[[], Mapping[str, torch.Tensor]]
) -> Callable[[], None]:
    def add(mod: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output + current()["shift"]

    return model.register_forward_hook(add).remove


def test_each_thread_sees_its_own_tensors() -> None:
    layer = nn.Linear(3, 3)
    hooks = HookedForward(layer, _install)
    x = torch.ones(1, 3)
    plain = layer(x).detach()
    barrier = threading.Barrier(2)
    got: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        def forward() -> torch.Tensor:
            barrier.wait()  # both calls are inside the hooks at once
            return layer(x).detach()

        got[i] = hooks.call({"shift": torch.full((3,), float(i))}, forward)

    with hooks.session():
        threads = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(layer._forward_hooks) == 1  # installed once for both
    for i in (1, 2):
        torch.testing.assert_close(got[i], plain + i)
    assert not layer._forward_hooks  # removed with the last user
    torch.testing.assert_close(layer(x), plain)


def test_a_plain_forward_inside_a_session_fails_clearly() -> None:
    layer = nn.Linear(3, 3)
    hooks = HookedForward(layer, _install)
    with hooks.session(), pytest.raises(RuntimeError, match="outside a per-example"):
        layer(torch.ones(1, 3))
    assert not layer._forward_hooks


def test_one_instance_per_model_dropped_with_it() -> None:
    import gc
    import weakref

    layer = nn.Linear(2, 2)
    first = hooked_forward(layer, _install)
    assert hooked_forward(layer, _install) is first
    gone = weakref.ref(layer)
    del layer, first
    gc.collect()
    assert gone() is None
