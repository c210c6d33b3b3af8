"""Partial log densities of a trace: the sum over some of its sites, the others held fixed.

``generate`` with every choice given scores the whole trace; :meth:`project
<probgen.core.gfi.GenerativeFunction.project>` then sums the per-site scores of the sites
of interest: the log likelihood of a tempered target, or the reverse weight of a
regeneration move. Works for sites inside any combinator.
"""

from __future__ import annotations

from typing import Any

import jax

from probgen.core.choicemap import ChoiceMap, Selection, as_choicemap, as_selection
from probgen.core.gfi import GenerativeFunction


def replay_generate(gf: GenerativeFunction, choices: ChoiceMap, replayed: Selection, *args: Any):
    """``generate`` with the ``replayed`` choices fixed without weighing them.

    Args:
      gf: the generative function.
      choices: a complete choice map of ``gf``.
      replayed: the addresses whose recorded values are reused but not weighed.
      *args: the arguments of ``gf``.

    Returns:
      ``(trace, weight)``: ``trace.score`` is the full log joint of ``choices`` and
      ``weight`` the sum of log densities of the non-replayed sites
      (``gf.project(trace, replayed.complement())``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def point(mean):
        ...     z = pg.sample("z", pg.Normal(mean, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> choices = pg.ChoiceMap({"z": jnp.zeros(3), "x": jnp.zeros(3)})
        >>> _, log_lik = pg.mc.replay_generate(pg.vmap(point), choices, pg.select("z"), jnp.zeros(3))
        >>> round(float(log_lik), 4)  # the three x sites: 3 log N(0; 0, 1)
        -2.7568
    """
    # Every choice is given, so generate draws nothing: the key is never used.
    trace, _ = gf.generate(jax.random.key(0), as_choicemap(choices), *args)
    return trace, gf.project(trace, as_selection(replayed).complement())
