"""Partial log densities of a trace: the sum over some of its sites, by replaying the rest.

``generate`` weighs only the constrained sites. Running it with some choices constrained
and the others *replayed* (an interceptor hands back their recorded values instead of
drawing) gives the log density of just the constrained sites at the recorded values:
the log likelihood of a tempered target, or the reverse weight of a regeneration move.
Replay works for sites that are not inside a ``vmap``/``scan``/``repeat`` combinator
(those see one element at a time); such sites raise a clear error.
"""

from __future__ import annotations

from typing import Any

import jax

from probgen.core import handlers
from probgen.core.choicemap import ChoiceMap, Selection, format_address
from probgen.core.gfi import GenerativeFunction


class _Replay(handlers.Interceptor):
    """Interceptor returning recorded values at the given full addresses."""

    def __init__(self, values: dict, gf_name: str):
        self.values = values
        self.gf_name = gf_name

    def draw(self, site, key):
        if site.address not in self.values:
            return None
        if site.combinators:
            raise NotImplementedError(
                f"{self.gf_name}: address {format_address(site.address)!r} sits inside a "
                f"{'/'.join(site.combinators)} combinator; this operation replays recorded values and "
                "supports latent sites outside vmap/scan/repeat only (make that latent a single "
                "vector-valued site, or keep it out of the selection)"
            )
        return self.values[site.address], {}


def replay_generate(gf: GenerativeFunction, choices: ChoiceMap, replayed: Selection, *args: Any):
    """``generate`` with the ``replayed`` choices fixed without weighing them.

    Args:
      gf: the generative function.
      choices: a complete choice map of ``gf``.
      replayed: the addresses whose recorded values are reused but not weighed.
      *args: the arguments of ``gf``.

    Returns:
      ``(trace, weight)``: ``trace.score`` is the full log joint of ``choices`` and
      ``weight`` the sum of log densities of the non-replayed sites.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     return pg.sample("x", pg.Normal(z, 1.0))
        >>> _, log_lik = pg.mc.replay_generate(model, pg.ChoiceMap({"z": 0.0, "x": 0.0}), pg.select("z"))
        >>> round(float(log_lik), 4)
        -0.9189
    """
    kept = choices.filter(replayed.complement())
    values = choices.filter(replayed).to_dict()
    with handlers.handle(_Replay(values, gf.__name__)):
        return gf.generate(jax.random.key(0), kept, *args)
