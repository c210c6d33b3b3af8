"""Traces: the record of one execution of a generative function."""

from __future__ import annotations

from typing import Any

import jax

from probgen.core.choicemap import Address, ChoiceMap
from probgen.core.pytrees import merge_arrays, split_arrays


@jax.tree_util.register_pytree_node_class
class Trace:
    """One execution of a generative function: its choices, return value and score.

    Attributes:
      gf: the generative function that made it (static).
      args: the arguments it was run with.
      retval: the return value.
      choices: a :class:`ChoiceMap` of every random choice.
      score: ``log p(choices; args)``, the log joint density of the choices.
      extras: per-estimator sums collected from sites by ``pg.vi`` (empty otherwise).
      site_scores: a :class:`ChoiceMap` parallel to ``choices`` holding each site's log
        density (summed over the site's own batch dimensions; a leading axis under
        ``vmap``/``scan``; 0 at addresses of ``switch`` branches not taken), or None for
        generative functions whose score does not split by site (``pg.vi.marginal``).
        Moves that keep some sites and drop others (``regenerate``) read it.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     return pg.sample("z", pg.Normal(0.0, 1.0))
        >>> tr = model.simulate(jax.random.key(0))
        >>> bool(tr["z"] == tr.retval)
        True
    """

    __slots__ = ("gf", "args", "retval", "choices", "score", "extras", "site_scores")

    def __init__(self, gf, args, retval, choices, score, extras=None, site_scores=None):
        self.gf = gf
        self.args = args
        self.retval = retval
        self.choices = choices
        self.score = score
        self.extras = {} if extras is None else extras
        self.site_scores = site_scores

    def tree_flatten(self):
        # A module among the arguments (an equinox Module's functions): its non-array
        # leaves are static data of the trace, so traces pass through jit, vmap and scan.
        args, static_args = split_arrays(self.args)
        return (args, self.retval, self.choices, self.score, self.extras, self.site_scores), (self.gf, static_args)

    @classmethod
    def tree_unflatten(cls, aux, children):
        gf, static_args = aux
        args, *rest = children
        return cls(gf, merge_arrays(args, static_args), *rest)

    def __getitem__(self, address: Address) -> Any:
        return self.choices[address]

    def __repr__(self) -> str:
        name = getattr(self.gf, "__name__", type(self.gf).__name__)
        return f"Trace({name}, choices={self.choices!r})"
