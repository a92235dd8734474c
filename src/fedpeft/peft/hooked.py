"""Per-example forwards through hooks on shared modules, on several threads.

LoRA, IA3 and BitFit change what modules inside the body compute, so their
per-example forward (:meth:`~fedpeft.peft.base.AdapterClassifier.per_example_logits`)
puts forward hooks on those modules. The hooks read the per-example tensors
of the call running on *their own thread* (thread-local storage), so one set
of hooks serves several concurrent calls: the batched engine's bucket threads
open one :meth:`HookedForward.session` for the whole of local training and
run their calls inside it.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from fedpeft.models.tokenized import Batch
from fedpeft.peft.base import AdapterClassifier

Tensors = Mapping[str, torch.Tensor]
Install = Callable[[Any, Callable[[], Tensors]], Callable[[], None]]
T = TypeVar("T")


class HookedForward:
    """Hooks installed while any call needs them, each call's tensors per thread.

    Args:
        model: The module whose submodules get the hooks (held weakly).
        install: ``install(model, current)`` installs the hooks, given a
            function returning the current thread's tensors, and returns a
            function that removes them.
    """

    def __init__(self, model: Any, install: Install) -> None:
        self._model = weakref.ref(model)
        self._install = install
        self._local = threading.local()
        self._lock = threading.Lock()
        self._users = 0
        self._remove: Callable[[], None] | None = None

    def current(self) -> Tensors:
        """The tensors of the call running on this thread."""
        params: Tensors | None = getattr(self._local, "params", None)
        if params is None:
            raise RuntimeError(
                "a per-example hook ran outside a per-example call; run the "
                "model's plain forward outside HookedForward.session()"
            )
        return params

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Keep the hooks installed (they are installed once, however nested).

        Inside a session the hooked modules compute the per-example path only,
        so only per-example calls may run while it is open.
        """
        with self._lock:
            if self._users == 0:
                self._remove = self._install(self._model(), self.current)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._remove is not None:
                    self._remove()
                    self._remove = None

    def call(self, params: Tensors, fn: Callable[[], T]) -> T:
        """``fn()`` with ``params`` as this thread's per-example tensors."""
        with self.session():
            self._local.params = params
            try:
                return fn()
            finally:
                self._local.params = None


def bias_shift_hooks(
    targets: Sequence[tuple[str, nn.Module]],
    current: Callable[[], Tensors],
    channel_dim: int,
) -> Callable[[], None]:
    """Hooks that make each ``(key, module)`` of ``targets`` compute with
    example i's own bias ``current()[key][i]``: its output plus ``b_i − b``
    along ``channel_dim`` (-1 for ``(B, seq, features)``, 1 for a convolution
    map ``(B, C, H, W)``). Returns a function that removes them."""

    def hook(key: str) -> Callable[..., torch.Tensor]:
        def add_shift(
            mod: Any, args: tuple[Any, ...], output: torch.Tensor
        ) -> torch.Tensor:
            shift: torch.Tensor = current()[key] - mod.bias  # (B, channels)
            shape = [shift.shape[0]] + [1] * (output.ndim - 1)
            shape[channel_dim] = shift.shape[1]
            return output + shift.view(shape).to(output.dtype)

        return add_shift

    handles = [module.register_forward_hook(hook(key)) for key, module in targets]

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return remove


_HOOKS: weakref.WeakKeyDictionary[Any, HookedForward] = weakref.WeakKeyDictionary()
_HOOKS_LOCK = threading.Lock()


def hooked_forward(model: Any, install: Install) -> HookedForward:
    """The one :class:`HookedForward` of ``model``, kept outside the module (so
    models still copy and pickle) and dropped with it."""
    with _HOOKS_LOCK:
        if model not in _HOOKS:
            _HOOKS[model] = HookedForward(model, install)
        return _HOOKS[model]


class HookedAdapterClassifier(AdapterClassifier):
    """An adapter whose per-example forward hooks modules inside its body.

    Subclasses implement :meth:`install_per_example_hooks`; the session and the
    per-example call are the same for all of them.
    """

    def install_per_example_hooks(
        self, current: Callable[[], Tensors]
    ) -> Callable[[], None]:
        """Install hooks that make each example use its own tensors from
        ``current()``; return a function that removes them."""
        raise NotImplementedError

    def per_example_session(self) -> contextlib.AbstractContextManager[None]:
        return self._hooks().session()

    def per_example_logits(self, batch: Batch, params: Tensors) -> torch.Tensor:
        """Logits where example i uses its own copy ``params[name][i]`` of the
        trainable tensors, through the hooks (safe on several threads)."""
        features = self._hooks().call(params, lambda: self.features(batch))
        return self.per_example_head(features, params)

    def _hooks(self) -> HookedForward:
        return hooked_forward(self, type(self).install_per_example_hooks)
