"""The generative-function interface shared by ``@pg.gen`` functions and combinators.

Every generative function implements one method, ``_run(key, constraints, args, mode)``,
and derives the public four from it:

* ``simulate(key, *args) -> Trace``
* ``assess(choices, *args) -> (log_density, retval)``
* ``generate(key, constraints, *args) -> (Trace, log_weight)``
* ``update(key, trace, constraints, *args) -> (Trace, log_weight, discarded)``

``_run`` returns ``(trace, weight)`` where ``weight`` is the log density of the
constrained choices (the importance weight when the rest come from the prior).
"""

from __future__ import annotations

import enum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core import handlers
from probgen.core.choicemap import EMPTY, ChoiceMap, as_choicemap, as_selection, format_address
from probgen.core.errors import ArgumentError, ConstraintError
from probgen.core.trace import Trace


class Mode(enum.Enum):
    SIMULATE = "simulate"   # every choice drawn
    GENERATE = "generate"   # constrained choices fixed, the rest drawn from the prior
    ASSESS = "assess"       # every choice given; a missing one is an error


class GenerativeFunction:
    """Base class of generative functions (GFs). Subclasses implement ``_run``."""

    __name__ = "generative_function"

    def _run(self, key, constraints: ChoiceMap, args: tuple, mode: Mode) -> tuple[Trace, jax.Array]:
        raise NotImplementedError

    # -- the public interface ---------------------------------------------------
    def simulate(self, key: jax.Array, *args: Any) -> Trace:
        """Run forward, drawing every choice: returns a :class:`Trace`.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def coin(p):
            ...     return pg.sample("flip", pg.Bernoulli(probs=p))
            >>> tr = coin.simulate(jax.random.key(0), 0.5)
            >>> tr.choices.addresses()
            [('flip',)]
        """
        check_args(self, args)
        with handlers.public_call():
            trace, _ = self._run(key, EMPTY, args, Mode.SIMULATE)
        handlers.report_trace(trace)
        return trace

    def assess(self, choices: ChoiceMap | dict, *args: Any) -> tuple[jax.Array, Any]:
        """Log density of a complete choice map, and the return value.

        Example:
            >>> import probgen as pg
            >>> @pg.gen
            ... def model():
            ...     return pg.sample("z", pg.Normal(0.0, 1.0))
            >>> logp, z = model.assess({"z": 0.0})
            >>> round(float(logp), 4)
            -0.9189
        """
        trace, _ = self._run_constrained(None, choices, args, Mode.ASSESS)
        return trace.score, trace.retval

    def generate(self, key: jax.Array, constraints: ChoiceMap | dict, *args: Any) -> tuple[Trace, jax.Array]:
        """Importance sample: constrained choices fixed, the rest drawn from the prior.

        Returns the trace and ``log_weight = log p(constrained | unconstrained)``,
        whose exponential is an unbiased estimate of the marginal likelihood.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
            ...     return pg.sample("x", pg.Normal(z, 1.0))
            >>> tr, log_w = model.generate(jax.random.key(0), {"x": 0.5})
            >>> float(tr["x"])
            0.5
        """
        return self._run_constrained(key, constraints, args, Mode.GENERATE)

    def _run_constrained(self, key, constraints, args: tuple, mode) -> tuple[Trace, jax.Array]:
        """assess / generate: run with ``constraints``, every one of which must be used."""
        check_args(self, args)
        constraints = as_choicemap(constraints)
        with handlers.public_call():
            trace, weight = self._run(key, constraints, args, mode)
        check_consumed(self, constraints, trace.choices)
        handlers.report_trace(trace)
        return trace, weight

    def update(
        self, key: jax.Array, trace: Trace, constraints: ChoiceMap | dict, *args: Any
    ) -> tuple[Trace, jax.Array, ChoiceMap]:
        """Move a trace to new constraints (and optionally new arguments).

        Choices in ``constraints`` replace the old ones; the other old choices are
        kept where the new execution visits them; new addresses are drawn from the
        prior. ``log_weight = log p(new) - log p(old) - log q(fresh draws)``, the
        MH/SMC incremental weight. ``discarded`` holds the old values that were
        replaced or are no longer visited. Without ``args``, the trace's own are used.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     return pg.sample("z", pg.Normal(0.0, 1.0))
            >>> tr = model.simulate(jax.random.key(0))
            >>> new, log_w, discarded = model.update(jax.random.key(1), tr, {"z": 0.0})
            >>> bool(discarded["z"] == tr["z"])
            True
        """
        new_trace, weight, discarded, _ = self._update(key, trace, constraints, args, "update")
        return new_trace, weight - trace.score, discarded

    def regenerate(self, key: jax.Array, trace: Trace, selection: Any) -> tuple[Trace, jax.Array]:
        """Redraw the ``selection`` from the prior given the other choices; the MH log ratio.

        Returns ``(new_trace, log_alpha)`` with ``log_alpha = log p(new) q(old | new) /
        (p(old) q(new | old))`` for the proposal that redraws the selected choices (and any
        choice the new execution visits for the first time) from the prior and drops the
        choices it no longer visits: the sum of the log densities of the kept, unselected
        choices under the new trace minus the same under the old. Accepting with
        probability ``min(1, exp(log_alpha))`` leaves the posterior invariant, also when a
        selected ``switch``/``mix`` index changes which addresses exist.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
            ...     return pg.sample("x", pg.Normal(z, 1.0))
            >>> tr, _ = model.generate(jax.random.key(0), {"x": 1.0, "z": 0.0})
            >>> new, log_alpha = model.regenerate(jax.random.key(1), tr, pg.select("z"))
            >>> expected = pg.Normal(new["z"], 1.0).log_prob(1.0) - pg.Normal(0.0, 1.0).log_prob(1.0)
            >>> bool(abs(log_alpha - expected) < 1e-5)
            True
        """
        if isinstance(trace, Trace) and trace.site_scores is None:
            raise ConstraintError(f"regenerate: the trace of {self.__name__} has no per-site scores")
        selection = as_selection(selection)
        kept_old = trace.choices.filter(selection.complement())
        new_trace, weight, _, kept = self._update(key, trace.__class__(
            trace.gf, trace.args, trace.retval, kept_old, trace.score, trace.extras, trace.site_scores
        ), EMPTY, trace.args, "regenerate")
        old_kept = _masked_sum(trace.site_scores, selection, kept)
        return new_trace, weight - old_kept

    def project(self, trace: Trace, selection: Any) -> jax.Array:
        """The log density of the ``selection``'s choices in ``trace`` (Gen's ``project``).

        The sum of the trace's per-site scores at the selected addresses: the log
        likelihood of a tempered target when the selection is the observations, and a
        term of the reverse weight of a move. Works for sites inside any combinator.

        Example:
            >>> import jax, probgen as pg
            >>> @pg.gen
            ... def model():
            ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
            ...     return pg.sample("x", pg.Normal(z, 1.0))
            >>> tr, _ = model.generate(jax.random.key(0), {"z": 0.0, "x": 0.0})
            >>> round(float(model.project(tr, pg.select("x"))), 4)
            -0.9189
        """
        if trace.gf is not self:
            raise ArgumentError(f"project of {self.__name__} was given a trace of {trace.gf.__name__!r}")
        if trace.site_scores is None:
            raise ConstraintError(f"project: the score of {self.__name__} does not split by site")
        selection = as_selection(selection)
        total = zero()
        for address, score in trace.site_scores.to_dict().items():
            inner = [a for a in trace.choices.addresses() if a[: len(address)] == address]
            chosen = [selection.contains(a) for a in inner]
            if any(chosen) and not all(chosen):
                raise ConstraintError(
                    f"project: {format_address(address)!r} is scored as one unit (a marginal or "
                    "normalized family); select all of it or none"
                )
            if chosen and chosen[0]:
                total = total + jnp.sum(score)
        return total

    def _update(self, key, trace: Trace, constraints, args, where: str):
        """The shared body of ``update`` and ``regenerate``: ``(trace, weight, discarded, kept)``.

        ``kept`` maps each old address to a boolean (array) saying whether the new trace
        still holds a value there (False for values of switch branches no longer taken).
        """
        if not isinstance(trace, Trace):
            raise ArgumentError(f"{where} of {self.__name__} needs a pg.Trace, got {type(trace).__name__}")
        if trace.gf is not self:
            raise ArgumentError(
                f"{where} of {self.__name__} was given a trace of {getattr(trace.gf, '__name__', trace.gf)!r}; "
                "a trace can only be updated by the generative function that made it"
            )
        args = trace.args if not args else args
        check_args(self, args)
        constraints = as_choicemap(constraints)
        merged = trace.choices.merge(constraints)
        from probgen.core.gen import _is_placeholder, placeholder_like

        with handlers.public_call(constraints.addresses()) as call:
            prefix = handlers.full_address(())
            new_trace, weight = self._run(key, merged, args, Mode.GENERATE)
        check_consumed(self, constraints, new_trace.choices)
        switched = {a[len(prefix):] for a in call.switched}
        replaced = set(constraints.addresses())
        discarded, kept = {}, {}
        new_scores = new_trace.site_scores.to_dict() if new_trace.site_scores is not None else {}
        for address, old in trace.choices.to_dict().items():
            if address not in new_trace.choices:
                kept[address] = jnp.asarray(False)
                discarded[address] = old
                continue
            new = new_trace.choices[address]
            if jnp.shape(new) != jnp.shape(old):      # a scan run with a new length
                kept[address] = jnp.asarray(True)
                discarded[address] = old
            elif address in switched:
                # One flag per element of the vmap/scan axes above the site.
                batch_ndim = jnp.ndim(new_scores[address]) if address in new_scores else 0
                dropped = _is_placeholder(new, batch_ndim) & ~_is_placeholder(old, batch_ndim)
                kept[address] = ~dropped
                if address in replaced:
                    discarded[address] = old
                else:
                    mask = dropped.reshape(dropped.shape + (1,) * (jnp.ndim(old) - batch_ndim))
                    discarded[address] = jnp.where(mask, old, placeholder_like(old))
            else:
                kept[address] = jnp.asarray(True)
                if address in replaced:
                    discarded[address] = old
        handlers.report_trace(new_trace)
        return new_trace, weight, ChoiceMap(discarded), kept

    # Convenience so that ``gf.simulate`` etc. can be jitted with the GF closed over.
    def __repr__(self) -> str:
        return f"<generative function {self.__name__}>"


def check_consumed(gf: GenerativeFunction, constraints: ChoiceMap, choices: ChoiceMap) -> None:
    """Raise when a constraint names an address that no sample site visited."""
    unused = [a for a in constraints.addresses() if a not in choices]
    if unused:
        names = ", ".join(repr(format_address(a)) for a in unused)
        visited = ", ".join(format_address(a) for a in choices.addresses()) or "none"
        raise ConstraintError(
            f"constraint(s) at {names} were not consumed by any sample site of "
            f"{gf.__name__} (its addresses: {visited}); an unused constraint is an error, "
            "check the address spelling"
        )


def check_args(gf: GenerativeFunction, args: tuple) -> None:
    """Every argument leaf must be an array, a number, a bool or a function (a module's activation)."""
    for position, arg in enumerate(args):
        leaves = jax.tree_util.tree_leaves_with_path(arg)
        for path, leaf in leaves:
            if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool, complex)):
                continue
            if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
                continue
            if callable(leaf):  # static data of the trace (see Trace.tree_flatten)
                continue
            where = f"argument {position}" + (jax.tree_util.keystr(path) if path else "")
            raise ArgumentError(
                f"{where} of {gf.__name__} is a {type(leaf).__name__} ({leaf!r:.60}); "
                "generative-function arguments must be arrays or pytrees of arrays. "
                "Close over static settings (strings, sizes, options) instead of passing them."
            )


def zero() -> jax.Array:
    """A weakly typed scalar 0: adding a log density keeps that density's dtype."""
    return jnp.asarray(0.0)


def _masked_sum(site_scores: ChoiceMap, selection, kept: dict) -> jax.Array:
    """Sum of the site scores at unselected addresses whose values the new trace kept."""
    total = zero()
    for address, score in site_scores.to_dict().items():
        if selection.contains(address):
            continue
        inner = [a for a in kept if a[: len(address)] == address]
        if len(inner) > 1 or (inner and inner[0] != address):
            # A callee scored as one unit (marginal / normalized family).
            if any(selection.contains(a) for a in inner):
                raise ConstraintError(
                    f"regenerate: {format_address(address)!r} is scored as one unit (a marginal or "
                    "normalized family); select all of it or none"
                )
            keep = jnp.all(jnp.stack([jnp.all(kept[a]) for a in inner]))
        else:
            keep = kept[address] if inner else jnp.asarray(True)
        total = total + jnp.sum(jnp.where(keep, score, jnp.zeros_like(score)))
    return total


def add_extras(a: dict, b: dict) -> dict:
    out = dict(a)
    for name, value in b.items():
        out[name] = out[name] + value if name in out else value
    return out
