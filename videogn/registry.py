"""One registry pattern for every pluggable axis (norms, models, clip-shape schedules, batch samplers).

A registry maps names to objects (classes, builders, factories). ``register`` works as a call or a
decorator; a name that is not found raises ``ValueError`` listing the valid names, so every
config typo tells the user what they could have written.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Optional, TypeVar, overload

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects of one kind.

    Args:
        kind: what the entries are ("norm", "model", ...); used in error messages.
        lowercase: look names up case-insensitively (stored lower-case).
        check: called as ``check(name, entry)`` before an entry is added; raises (TypeError or
            ValueError naming what is missing) to refuse an entry that lacks a declaration.
    """

    def __init__(
        self, kind: str, *, lowercase: bool = False, check: Optional[Callable[[str, T], None]] = None
    ) -> None:
        self.kind = kind
        self._lowercase = lowercase
        self._check = check
        self._entries: dict[str, T] = {}

    def _key(self, name: str) -> str:
        return name.lower() if self._lowercase else name

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Optional[T] = None):  # type: ignore[no-untyped-def]
        """``reg.register("x", obj)`` or ``@reg.register("x")``; a name can be registered once."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            key = self._key(name)
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self._check is not None:
                self._check(name, entry)
            self._entries[key] = entry
            return entry

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises ValueError listing the valid ones."""
        key = self._key(name) if isinstance(name, str) else None
        if key is None or key not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._entries[key]

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted (a stable order, whatever the registration order)."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
