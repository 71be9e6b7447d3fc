"""``Registry``: the one name → object registry every fsar registry is built on.

One wording for every registry, whatever it holds (metrics, backends, samplers, chat formats …):

- an unknown name raises ``UnknownNameError`` (a ``ValueError``):
  ``unknown {kind} {name!r}; registered {kind}s: a, b, c``;
- a name taken twice raises ``DuplicateNameError`` (a ``ValueError``):
  ``a {kind} named {name!r} is already registered ({what holds it})``;
- ``names()`` (and iteration) lists the registered names sorted.

Each entry may carry declared metadata: ``register(name, **declared)`` builds it with the
registry's ``declared`` factory (a frozen dataclass; an unknown keyword is an error naming the valid
ones), and ``entry(name)`` returns the object with its metadata. An optional ``check`` hook rejects
what may not be registered.

Example:
    >>> from dataclasses import dataclass
    >>> from fsar_metric.registry import Registry
    >>> @dataclass(frozen=True)
    ... class Info:
    ...     lossless: bool = False
    >>> codecs: Registry[type, Info] = Registry("codec", declared=Info)
    >>> @codecs.register("raw", lossless=True)
    ... class Raw: ...
    >>> _ = codecs.register("zip", type("Zip", (), {}))
    >>> codecs.names(), codecs.get("raw") is Raw, codecs.entry("raw").declared.lossless
    (['raw', 'zip'], True, True)
    >>> codecs.get("rar")
    Traceback (most recent call last):
    ...
    fsar_metric.registry.UnknownNameError: unknown codec 'rar'; registered codecs: raw, zip
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from fsar_metric.errors import InputError

__all__ = ["DuplicateNameError", "Entry", "NoDeclared", "Registry", "UnknownNameError"]

T = TypeVar("T")
D = TypeVar("D")
O = TypeVar("O")

_DECORATE: Any = object()  # register(name) without an object: return a decorator


class UnknownNameError(InputError):
    """A name that no entry of the registry holds (the message lists the registered names)."""


class DuplicateNameError(InputError):
    """A name that an entry of the registry already holds."""


@dataclass(frozen=True)
class NoDeclared:
    """The declared metadata of a registry whose entries declare nothing."""


@dataclass(frozen=True)
class Entry(Generic[T, D]):
    """One registered object with its declared metadata.

    Attributes:
        name: the name it is registered under.
        obj: the registered object (a class, a function, an instance).
        declared: what ``register(name, **declared)`` declared, as the registry's ``declared`` type.
    """

    name: str
    obj: T
    declared: D


def _describe(obj: object) -> str:
    """``module.QualName`` of a class or function, else its repr."""
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    return f"{module}.{qualname}" if isinstance(qualname, str) and isinstance(module, str) else repr(obj)


class Registry(Generic[T, D]):
    """Named objects of one kind, with declared metadata per entry.

    Args:
        kind: what an entry is, singular (``"metric"``, ``"chat format"``); used in every message.
        declared: builds an entry's metadata from ``register``'s keywords (a frozen dataclass whose
            fields all have defaults); default ``NoDeclared``, which takes no keyword.
        check: called as ``check(name, obj)`` before registering; raises (a ``ValueError`` naming
            what is wrong) when ``obj`` may not be registered.
        plural: the plural of ``kind`` in the unknown-name message; default ``kind + "s"``.

    Raises:
        ValueError: an empty ``kind``.
    """

    def __init__(
        self,
        kind: str,
        *,
        declared: Callable[..., D] = NoDeclared,  # type: ignore[assignment]
        check: Callable[[str, T], None] | None = None,
        plural: str | None = None,
    ) -> None:
        if not kind:
            raise InputError("a Registry needs a non-empty kind (what an entry is, e.g. 'metric')")
        self.kind = kind
        self.plural = plural if plural is not None else f"{kind}s"
        self._declared = declared
        self._check = check
        self._entries: dict[str, Entry[T, D]] = {}

    @overload
    def register(self, name: str, /, **declared: Any) -> Callable[[O], O]: ...

    @overload
    def register(self, name: str, obj: O, /, **declared: Any) -> O: ...

    def register(self, name: str, obj: Any = _DECORATE, /, **declared: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator that does it.

        Args:
            name: the name (a non-empty string, not yet taken).
            obj: the object; omit it to use ``register(name, …)`` as a decorator.
            **declared: the entry's metadata, passed to the registry's ``declared`` factory.

        Returns:
            ``obj`` (or, as a decorator, the decorated object), unchanged.

        Raises:
            DuplicateNameError: ``name`` is taken.
            ValueError: ``name`` is not a non-empty string, a declared keyword is unknown or invalid,
                or the ``check`` hook rejects ``obj``.
        """
        if not isinstance(name, str) or not name:
            raise InputError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        metadata = self._build_declared(name, declared)

        def add(target: O) -> O:
            if name in self._entries:
                raise DuplicateNameError(
                    f"a {self.kind} named {name!r} is already registered ({_describe(self._entries[name].obj)})"
                )
            if self._check is not None:
                self._check(name, target)  # type: ignore[arg-type]
            self._entries[name] = Entry(name, target, metadata)  # type: ignore[arg-type]
            return target

        return add if obj is _DECORATE else add(obj)

    def _build_declared(self, name: str, declared: dict[str, Any]) -> D:
        factory = self._declared
        if dataclasses.is_dataclass(factory):
            valid = sorted(f.name for f in dataclasses.fields(factory) if f.init)
            unknown = sorted(set(declared) - set(valid))
            if unknown:
                raise InputError(
                    f"{self.kind} {name!r} declares unknown field(s) {unknown}; "
                    f"a {self.kind} may declare: {', '.join(valid) or '(nothing)'}"
                )
        return factory(**declared)

    def unregister(self, name: str) -> Entry[T, D]:
        """Remove ``name`` and return its entry (tests and documentation examples clean up with it).

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        entry = self.entry(name)
        del self._entries[name]
        return entry

    def entry(self, name: str) -> Entry[T, D]:
        """The entry (object and declared metadata) registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the registered names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            listed = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered {self.plural}: {listed}") from None

    def get(self, name: str) -> T:
        """The object registered under ``name`` (raises ``UnknownNameError`` like ``entry``)."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        """The registered names, sorted."""
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
