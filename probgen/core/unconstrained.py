"""Running a generative function with some choices in unconstrained coordinates.

Gradient-based MCMC moves every continuous latent on the real line: a site with support
``S`` holds ``x = T(u)`` where ``T = biject_to(S)`` (numpyro's bijections), and the
density of ``u`` is ``p(x) |det dT/du|``. The map is made at each site while the model runs,
so it works inside ``pg.scan``, ``pg.vmap`` and nested calls, and a support whose bounds
are other choices' values uses the bounds of the same execution.
"""

from __future__ import annotations

from typing import Any

from probgen.core import handlers
from probgen.core.choicemap import ChoiceMap, as_selection
from probgen.core.gfi import GenerativeFunction, Mode
from probgen.core.trace import Trace


def assess_unconstrained(gf: GenerativeFunction, choices, args: tuple, selection: Any,
                         inverse: bool = False) -> Trace:
    """``assess`` with the selected choices given in unconstrained coordinates.

    With ``inverse=False`` the selected values of ``choices`` are unconstrained
    coordinates: the returned trace holds their constrained values and its ``score`` is the
    log density of the unconstrained ones (the log-det Jacobians included). With
    ``inverse=True`` the values are constrained and the trace's choices at the selection
    are their unconstrained coordinates.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> from probgen.core.unconstrained import assess_unconstrained
        >>> @pg.gen
        ... def scale_model():
        ...     return pg.sample("s", pg.LogNormal(0.0, 1.0))
        >>> trace = assess_unconstrained(scale_model, {"s": 0.0}, (), pg.select("s"))
        >>> float(trace["s"]), round(float(trace.score), 4)   # s = exp(0); N(0; 0, 1) density of log s
        (1.0, -0.9189)
    """
    with handlers.handle(handlers.Unconstrained(as_selection(selection), inverse)):
        trace, _ = gf._run_constrained(None, choices, tuple(args), Mode.ASSESS)
    return trace


def to_unconstrained(gf: GenerativeFunction, choices, args: tuple, selection: Any) -> ChoiceMap:
    """The choices with the selected values mapped to unconstrained coordinates.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> from probgen.core.unconstrained import to_unconstrained
        >>> @pg.gen
        ... def scale_model():
        ...     return pg.sample("s", pg.HalfNormal(1.0))
        >>> float(to_unconstrained(scale_model, {"s": 1.0}, (), pg.select("s"))["s"])
        0.0
    """
    return assess_unconstrained(gf, choices, args, selection, inverse=True).choices
