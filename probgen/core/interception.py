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
