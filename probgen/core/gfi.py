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

from probgen.core import interception
from probgen.core.choicemap import EMPTY, ChoiceMap, as_choicemap, format_address
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
        trace, _ = self._run(key, EMPTY, args, Mode.SIMULATE)
        interception.report_trace(trace)
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
        check_args(self, args)
        choices = as_choicemap(choices)
        trace, weight = self._run(None, choices, args, Mode.ASSESS)
        check_consumed(self, choices, trace.choices)
        interception.report_trace(trace)
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
        check_args(self, args)
        constraints = as_choicemap(constraints)
        trace, weight = self._run(key, constraints, args, Mode.GENERATE)
        check_consumed(self, constraints, trace.choices)
        interception.report_trace(trace)
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
        args = trace.args if not args else args
        check_args(self, args)
        constraints = as_choicemap(constraints)
        merged = trace.choices.merge(constraints)
        new_trace, weight = self._run(key, merged, args, Mode.GENERATE)
        check_consumed(self, constraints, new_trace.choices)
        replaced = trace.choices.filter(constraints.addresses())
        dropped = [a for a in trace.choices.addresses() if a not in new_trace.choices]
        discarded = replaced.merge(trace.choices.filter(dropped)) if dropped else replaced
        interception.report_trace(new_trace)
        return new_trace, weight - trace.score, discarded

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
    """Every argument leaf must be an array, a number or a bool."""
    for position, arg in enumerate(args):
        leaves = jax.tree_util.tree_leaves_with_path(arg)
        for path, leaf in leaves:
            if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool, complex)):
                continue
            if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
                continue
            where = f"argument {position}" + (jax.tree_util.keystr(path) if path else "")
            raise ArgumentError(
                f"{where} of {gf.__name__} is a {type(leaf).__name__} ({leaf!r:.60}); "
                "generative-function arguments must be arrays or pytrees of arrays. "
                "Close over static settings (functions, strings, sizes) instead of passing them."
            )


def zero() -> jax.Array:
    return jnp.zeros((), dtype=jnp.float32)


def add_extras(a: dict, b: dict) -> dict:
    out = dict(a)
    for name, value in b.items():
        out[name] = out[name] + value if name in out else value
    return out
