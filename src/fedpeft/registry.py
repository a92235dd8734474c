"""Name-to-factory registries: one per kind of component, duplicates refused."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories of one kind of component.

    Components register themselves with :meth:`register` in their own module, so
    adding a method means adding a module, never editing a central ``if`` chain.

    Example:
        >>> STRATEGIES: Registry[type] = Registry("strategy")
        >>> @STRATEGIES.register("fedavg")
        ... class FedAvg: ...
        >>> STRATEGIES.get("fedavg") is FedAvg
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def decorator(obj: T) -> T:
            self.add(name, obj, help)
            return obj

        return decorator

    def add(self, name: str, obj: T, help: str = "") -> None:
        """Register ``obj`` under ``name``; refuse a name that is taken."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
        self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")

    def get(self, name: str) -> T:
        """Return the entry for ``name``.

        Raises:
            KeyError: naming the unknown entry, the closest match and all choices.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Choose one of: {', '.join(self)}"

    def describe(self, name: str) -> str:
        """One-line description of an entry (its docstring's first line)."""
        return self._help[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
