"""The effect system: one trace-time stack of handlers, and every query the interpreter makes of it.

While JAX traces a generative function, probgen keeps a Python list of *handlers*: the
execution of each ``@pg.gen`` body, the address scope of each nested call, the
combinators around the current site, the public method being run (which given values are
hard constraints), scopes where given values may be placeholders, validation mode,
whether site scores are kept per element (``PointwiseScores``), and the interceptors
that higher layers (``pg.vi``) install to change how sites draw. Nothing of it exists at
run time: compiled code carries no trace of the stack.

Every handler is pushed with :func:`handle` and popped on exit; the queries below read
the stack from the innermost handler outwards. The only extension point for other layers
is :class:`Interceptor`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple

from probgen.distributions.strategies import Strategy

_STACK: list[Any] = []


@contextlib.contextmanager
def handle(handler: Any) -> Iterator[Any]:
    """Push ``handler`` for the body of the ``with`` block."""
    _STACK.append(handler)
    try:
        yield handler
    finally:
        _STACK.pop()


def innermost(kind: type) -> Any | None:
    """The innermost handler of type ``kind``, or None."""
    for handler in reversed(_STACK):
        if isinstance(handler, kind):
            return handler
    return None


def _since_public_call() -> list[Any]:
    """The handlers pushed since the innermost public call began (its own program)."""
    for depth in range(len(_STACK) - 1, -1, -1):
        if isinstance(_STACK[depth], PublicCall):
            return _STACK[depth + 1:]
    return list(_STACK)


# -- the handlers -----------------------------------------------------------------------------


class Site(NamedTuple):
    """What an interceptor sees of a primitive sample site."""

    address: tuple[str, ...]      # full path, including enclosing GF sites
    dist: Any                     # the base distribution (strategy wrapper removed)
    strategy: Strategy
    options: dict
    combinators: tuple[str, ...]  # enclosing combinators, outermost first


class Interceptor:
    """Changes how primitive sites draw; the one hook other layers (``pg.vi``) use.

    ``draw(site, key)`` returns ``(value, terms)`` to take over a draw (``terms``: a dict
    of scalar arrays every combinator sums into ``Trace.extras``, which is how an
    estimator collects per-site terms across ``lax.scan``), or None to leave the site to
    its default draw. ``on_trace(trace)`` hears every trace a public GF method returns.
    """

    def draw(self, site: Site, key) -> tuple[Any, dict] | None:
        return None

    def on_trace(self, trace: Any) -> None:
        return None


class AddressScope(NamedTuple):
    """Sites inside are addressed under ``path`` (a nested generative-function call)."""

    path: tuple[str, ...]


class CombinatorScope(NamedTuple):
    """Sites inside run under the combinator ``name`` (vmap, scan, switch)."""

    name: str


class PublicCall(NamedTuple):
    """One public GF method (simulate, assess, generate, update) and its bookkeeping.

    ``constrained``: None when every given value is a hard constraint (generate, assess),
    or the set of full addresses of the new constraints (update: the old trace's other
    values may be dropped). ``switched`` collects the full addresses under a switch.
    """

    constrained: frozenset | None
    switched: set


class PlaceholderScope(NamedTuple):
    """Given values here may be placeholders (switch branches, padded scan steps): absent."""


class Unconstrained(NamedTuple):
    """Given values at the selected (full) addresses live in unconstrained coordinates.

    ``inverse=False``: a given value ``u`` is mapped onto its site's support by
    ``biject_to(support)`` and the site's log density gains ``log |det J|`` (the density of
    ``u``); the trace records the constrained value. ``inverse=True``: given values are
    constrained ones, and the trace records their unconstrained coordinates instead.
    """

    selection: Any   # a pg.Selection over full addresses
    inverse: bool


class Validating(NamedTuple):
    """Run-time checks are inserted while this is innermost-true (see ``pg.validate``)."""

    enabled: bool


class PointwiseScores(NamedTuple):
    """Traces made inside keep each primitive site's log density per element of its batch
    shape (event dimensions summed) in ``Trace.site_scores``, instead of the scalar sum.

    Combinators stack these like any site score (a ``pg.vmap`` plate of ``N`` gives
    ``(N, *batch_shape)``), so the trace holds the pointwise log-likelihood of every
    observation: what ``pg.mc.predictive`` reads. Scores and weights are unchanged. Use it
    around ``simulate`` / ``assess`` / ``generate`` only (``update`` reads scalar site scores).
    """


# -- queries ---------------------------------------------------------------------------------------


def full_address(path: tuple[str, ...]) -> tuple[str, ...]:
    """``path`` prefixed by the addresses of every enclosing call."""
    prefix: tuple[str, ...] = ()
    for handler in _STACK:
        if isinstance(handler, AddressScope):
            prefix = prefix + handler.path
    return prefix + path


def combinators() -> tuple[str, ...]:
    """The enclosing combinators, outermost first."""
    return tuple(h.name for h in _STACK if isinstance(h, CombinatorScope))


def interceptor() -> Interceptor | None:
    return innermost(Interceptor)


def report_trace(trace: Any) -> None:
    """Tell the innermost interceptor that a public GF method made ``trace``."""
    current = interceptor()
    if current is not None:
        current.on_trace(trace)


def public_call(constrained=None):
    """Handle one public GF method; ``constrained`` as in :class:`PublicCall` (relative addresses)."""
    if constrained is not None:
        prefix = full_address(())
        constrained = frozenset(prefix + a for a in constrained)
    return handle(PublicCall(constrained, set()))


def is_constraint(path: tuple[str, ...]) -> bool:
    """Whether the given value at ``path`` (relative to the current scope) is a hard constraint."""
    call = innermost(PublicCall)
    if call is None or call.constrained is None:
        return True
    full = full_address(path)
    return any(full[: len(c)] == c for c in call.constrained)


def placeholder_scope():
    return handle(PlaceholderScope())


def in_placeholder_scope() -> bool:
    """Whether a placeholder scope encloses this site within the current public call."""
    return any(isinstance(h, PlaceholderScope) for h in _since_public_call())


def record_switched(paths) -> None:
    """Note (relative) addresses that sit under a switch, for ``update``'s ``discarded``."""
    call = innermost(PublicCall)
    if call is not None:
        call.switched.update(full_address(p) for p in paths)


def unconstrained_site(full: tuple[str, ...]) -> Unconstrained | None:
    """The innermost :class:`Unconstrained` handler when it covers the site at ``full``."""
    space = innermost(Unconstrained)
    return space if space is not None and space.selection.contains(full) else None


def is_validating() -> bool:
    """Whether the function being traced now runs under ``pg.validate``."""
    flag = innermost(Validating)
    return flag is not None and flag.enabled


def pointwise_scores() -> bool:
    """Whether site scores are kept per batch element (a :class:`PointwiseScores` encloses)."""
    return innermost(PointwiseScores) is not None
