"""Name-to-component registries: one per kind of component, duplicates refused.

:class:`Registry` maps names to objects. :class:`ConfigRegistry` maps names to
:class:`Component` entries, each an options class (a frozen pydantic model
beside the component) and a factory, and validates a config section into the
options class registered under the section's tag: a tagged union resolved
through the registry at validation time, so a component registered later (a
plugin, a test) needs no edit to :mod:`fedpeft.config`.

A tagged-union config section for a new kind of component (as ``peft`` and
``partition`` do it)::

    class StrategyOptions(Options):
        name: str = "fedavg"  # the tag; each subclass narrows it to its own name

    STRATEGIES = ConfigRegistry[StrategyOptions, Factory](
        "strategy", section="strategy", tag="name", default="fedavg"
    )
    StrategyField = Annotated[
        SerializeAsAny[StrategyOptions], BeforeValidator(STRATEGIES.validate)
    ]
    # in RunConfig:  strategy: StrategyField = Field(default_factory=STRATEGIES.default)
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

T = TypeVar("T")
F = TypeVar("F")


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key and why."""


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
        self._help[name] = help or _first_line(obj)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (for tests that register a component of their own).

        Raises:
            KeyError: naming the unknown entry and the choices.
        """
        self.get(name)
        del self._entries[name], self._help[name]

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


def _first_line(obj: object) -> str:
    lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return lines[0] if lines else ""


class Options(BaseModel):
    """Base of a registered component's options: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (``model_copy`` validates
        nothing).

        Raises:
            ConfigError: naming each bad or unknown option.
        """
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as err:
            raise ConfigError(_error_lines(type(self).__name__, err, ())) from None


Opt = TypeVar("Opt", bound=Options)
ErrorLine = tuple[tuple[str | int, ...], str, str, Any]
"""One error: (location, type, message, input)."""


@dataclass(frozen=True)
class Component(Generic[Opt, F]):
    """A registry entry: the options class and the factory of one component.

    Attributes:
        options: The component's options model; its tag field's default is the
            name it is registered under.
        factory: The factory itself, or ``"module:attribute"`` imported on
            first :meth:`load` (so that reading a config does not import the
            component's heavy dependencies).
    """

    options: type[Opt]
    factory: F | str

    def load(self) -> F:
        """The factory, importing its module if it was given by name."""
        if not isinstance(self.factory, str):
            return self.factory
        module, _, attr = self.factory.partition(":")
        return cast(F, getattr(importlib.import_module(module), attr))


class ConfigRegistry(Registry[Component[Opt, F]]):
    """Components of one kind, each an options class plus a factory.

    Args:
        kind: What an entry is, for messages (``"PEFT method"``).
        section: The config section the options fill (``"peft"``).
        tag: The options key that names the component (``"method"``).
        default: The component a section without the tag selects.
    """

    def __init__(
        self, kind: str, *, section: str, default: str, tag: str = "method"
    ) -> None:
        super().__init__(kind)
        self.section, self.tag, self.default_name = section, tag, default

    def add_component(
        self, name: str, options: type[Opt], factory: F | str, help: str = ""
    ) -> None:
        """Register ``options`` and ``factory`` under ``name``.

        Raises:
            ValueError: if ``name`` is taken, or ``options``' tag field does
                not default to ``name``.
        """
        field = options.model_fields.get(self.tag)
        if field is None or field.default != name:
            raise ValueError(
                f"{options.__name__}.{self.tag} must default to {name!r}, the name "
                f"it is registered under as a {self.kind}"
            )
        self.add(name, Component(options, factory), help or _first_line(options))

    def options(self, name: str) -> type[Opt]:
        """The options class registered under ``name``."""
        return self.get(name).options

    def factory(self, name: str) -> F:
        """The factory registered under ``name`` (imported on first use)."""
        return self.get(name).load()

    def default(self) -> Opt:
        """The default component's options, every one at its default."""
        return self.options(self.default_name)()

    def create(self, name: str | None = None, /, **options: Any) -> Opt:
        """Validate ``options`` into the options of ``name`` (default: the
        registry's default component).

        Raises:
            ConfigError: for an unknown name or a bad or foreign option.
        """
        try:
            return self.validate({self.tag: name or self.default_name, **options})
        except ValidationError as err:
            raise ConfigError(
                _error_lines(self.section, err, (self.section,))
            ) from None

    def validate(self, value: object) -> Opt:
        """The section's options, in the class registered under its tag (the
        pydantic validator of the section's field).

        Raises:
            ValidationError: for an unknown tag (with the closest names), an
                option of another component (with this one's options) or a
                bad value.
        """
        if isinstance(value, Options):
            name = getattr(value, self.tag, None)
            if name in self and isinstance(value, self.options(str(name))):
                return value
            value = value.model_dump()
        if not isinstance(value, Mapping):
            raise ValueError(
                f"must be a table of options, e.g. {self.tag} = {self.default_name!r}"
            )
        name = value.get(self.tag, self.default_name)
        if not isinstance(name, str) or name not in self:
            message = self.unknown_message(str(name))
            raise _validation_error(
                self.section, [((self.tag,), "unknown_choice", message, name)]
            )
        cls = self.options(name)
        try:
            return cls.model_validate(dict(value))
        except ValidationError as err:
            raise self._explained(err, name, cls) from None

    def _explained(
        self, err: ValidationError, name: str, cls: type[Opt]
    ) -> ValidationError:
        """``err`` with each foreign key's message naming this component's options
        and the components that do have the key."""
        lines: list[ErrorLine] = []
        for e in err.errors():
            if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
                key = str(e["loc"][0])
                message = self._foreign(key, name, cls)
                lines.append((e["loc"], "not_an_option", message, e["input"]))
            else:
                lines.append((e["loc"], e["type"], e["msg"], e["input"]))
        return _validation_error(cls.__name__, lines)

    def _foreign(self, key: str, name: str, cls: type[Opt]) -> str:
        tagged = f"{self.section}.{self.tag}"
        own = [f for f in cls.model_fields if f != self.tag]
        base = next(  # the section's base options class, just below Options
            (
                c
                for c in reversed(cls.__mro__)
                if issubclass(c, Options) and c is not Options
            ),
            cls,
        )
        inherited = set(base.model_fields) if base is not cls else set()
        allowed = [f for f in own if f not in inherited] + [
            f for f in own if f in inherited
        ]
        holders = [n for n in self if key in self.options(n).model_fields]
        close = difflib.get_close_matches(key, allowed, n=2)
        message = (
            f"{self.section}.{key} is not an option of {tagged}={name!r}; its "
            f"options: {', '.join(allowed) or '(none)'}"
        )
        if holders:
            owners = ", ".join(repr(n) for n in holders)
            return f"{message}; {key} is an option of {tagged}={owners}"
        if close:
            return f"{message}. Did you mean {' or '.join(repr(c) for c in close)}?"
        others = {
            f: n
            for n in self
            for f in self.options(n).model_fields
            if f != self.tag and f not in allowed
        }
        near = difflib.get_close_matches(key, list(others), n=1)
        if near:
            return (
                f"{message}. Did you mean {near[0]!r}, an option of "
                f"{tagged}={others[near[0]]!r}?"
            )
        return message


def _validation_error(title: str, lines: Sequence[ErrorLine]) -> ValidationError:
    """A pydantic error whose lines keep their messages verbatim."""
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(kind, message),
            "loc": loc,
            "input": value,
        }
        for loc, kind, message, value in lines
    ]
    return ValidationError.from_exception_data(title, details)


SELF_DESCRIBING = ("not_an_option",)
"""Error types whose message already names the full key."""


def describe_error(error: Mapping[str, Any], prefix: Sequence[str] = ()) -> str:
    """One line for one pydantic error: ``key = value: what is wrong``."""
    if error["type"] in SELF_DESCRIBING:
        return str(error["msg"])
    key = ".".join([*prefix, *(str(p) for p in error["loc"])])
    return f"{key} = {error.get('input')!r}: {error['msg']}"


def _error_lines(what: str, err: ValidationError, prefix: Sequence[str]) -> str:
    lines = [describe_error(e, prefix) for e in err.errors()]
    return f"invalid {what} options:\n  " + "\n  ".join(lines)


def register_submodules(
    package: str, path: Iterable[str], *, packages_only: bool = False
) -> None:
    """Import every submodule of ``package`` (its ``__path__``), sorted by name,
    so that each registers its components: a new method, partitioner or
    strategy is one module (or folder, with ``packages_only``) and no edit
    elsewhere."""
    for module in sorted(
        m.name for m in pkgutil.iter_modules(path) if m.ispkg or not packages_only
    ):
        importlib.import_module(f"{package}.{module}")
