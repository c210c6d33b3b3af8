"""Trace-time hooks that higher layers (``pg.vi``) use to change how sites draw.

Nothing here exists at run time: the stacks are Python lists consulted while JAX
traces a generative function, so compiled code carries no trace of them.

An interceptor is any object with a method
``draw(site: Site, key) -> (value, extras) | None``. ``extras`` is a dict of scalar
arrays that the traces sum up (through every combinator, ``scan`` included), which is
how an estimator collects per-site terms without side channels across ``lax.scan``.
Returning None leaves the site to the default draw. An interceptor may also define
``on_trace(trace)``: the public methods ``simulate``/``generate``/``update``/``assess``
report every trace they return to it (combinators, which call ``_run``, do not).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple

from probgen.distributions.strategies import Strategy

_INTERCEPTORS: list[Any] = []
_ADDRESS_PREFIX: list[tuple[str, ...]] = []
_COMBINATORS: list[str] = []
_CONSTRAINED: list[Any] = []      # per public call: None (every given value is a constraint) or a set
_PLACEHOLDERS: list[bool] = []    # values here may be placeholders (switch branches, padded scans)
_SWITCHED: list[set] = []         # per public call: full addresses that sit under a switch


class Site(NamedTuple):
    """What an interceptor sees of a primitive sample site."""

    address: tuple[str, ...]      # full path, including enclosing GF sites
    dist: Any                     # the base distribution (strategy wrapper removed)
    strategy: Strategy
    options: dict
    combinators: tuple[str, ...]  # enclosing combinators, outermost first


@contextlib.contextmanager
def intercept(interceptor: Any) -> Iterator[None]:
    """Run the body with ``interceptor`` consulted at every primitive draw."""
    _INTERCEPTORS.append(interceptor)
    try:
        yield
    finally:
        _INTERCEPTORS.pop()


def report_trace(trace: Any) -> None:
    """Tell the current interceptor (if it has ``on_trace``) that a public GF method made ``trace``."""
    if _INTERCEPTORS and hasattr(_INTERCEPTORS[-1], "on_trace"):
        _INTERCEPTORS[-1].on_trace(trace)


def current_interceptor() -> Any | None:
    return _INTERCEPTORS[-1] if _INTERCEPTORS else None


@contextlib.contextmanager
def address_scope(path: tuple[str, ...]) -> Iterator[None]:
    _ADDRESS_PREFIX.append(path)
    try:
        yield
    finally:
        _ADDRESS_PREFIX.pop()


@contextlib.contextmanager
def combinator_scope(name: str) -> Iterator[None]:
    _COMBINATORS.append(name)
    try:
        yield
    finally:
        _COMBINATORS.pop()


def full_address(path: tuple[str, ...]) -> tuple[str, ...]:
    prefix: tuple[str, ...] = ()
    for part in _ADDRESS_PREFIX:
        prefix = prefix + part
    return prefix + path


def current_combinators() -> tuple[str, ...]:
    return tuple(_COMBINATORS)


@contextlib.contextmanager
def public_call(constrained: Any = None) -> Iterator[set]:
    """Scope of one public GF method: which given values are hard constraints.

    ``constrained`` is None when every given value is a constraint (generate, assess),
    or the set of full addresses of the new constraints (update: the old trace's other
    values may be dropped). Yields the set of full addresses that lie under a switch.
    """
    prefix = full_address(())
    if constrained is not None:
        constrained = {prefix + a for a in constrained}
    _CONSTRAINED.append(constrained)
    _SWITCHED.append(set())
    # A public call starts a fresh program: enclosing switch/padding scopes do not reach into it.
    saved = list(_PLACEHOLDERS)
    _PLACEHOLDERS.clear()
    try:
        yield _SWITCHED[-1]
    finally:
        _PLACEHOLDERS[:] = saved
        _SWITCHED.pop()
        _CONSTRAINED.pop()


def is_constraint(path: tuple[str, ...]) -> bool:
    """Whether the given value at ``path`` (relative to the current scope) is a hard constraint."""
    if not _CONSTRAINED or _CONSTRAINED[-1] is None:
        return True
    full = full_address(path)
    return any(full[: len(c)] == c for c in _CONSTRAINED[-1])


@contextlib.contextmanager
def placeholder_scope() -> Iterator[None]:
    """Values given in this scope may be placeholders, which count as absent."""
    _PLACEHOLDERS.append(True)
    try:
        yield
    finally:
        _PLACEHOLDERS.pop()


def in_placeholder_scope() -> bool:
    return bool(_PLACEHOLDERS)


def record_switched(paths) -> None:
    """Note (relative) addresses that sit under a switch, for ``update``'s ``discarded``."""
    if _SWITCHED:
        _SWITCHED[-1].update(full_address(p) for p in paths)
