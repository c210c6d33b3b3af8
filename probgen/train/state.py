"""The state and result of a training run (plain NamedTuples, so pytrees)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


class FitState(NamedTuple):
    """Everything a training run carries from one step to the next.

    Attributes:
      params: the parameters (any pytree of arrays).
      opt_state: the optax optimizer state.
      step: int32 scalar, the number of steps done.
      key: the run's *base* PRNG key; step ``i`` uses keys derived from ``(key, i)``, so
        the key never changes and a split or resumed run matches an unsplit one.

    A :func:`probgen.train.sweep` carries the states of all its members stacked: every
    leaf (``step`` and ``key`` included) with a leading member axis.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class FitResult(NamedTuple):
    """What :func:`probgen.train.fit` returns.

    Attributes:
      params: final parameters.
      opt_state: final optimizer state.
      history: dict of per-step arrays: ``"loss"`` and every metric the loss returned.
      step: the number of steps done (int32 scalar).
      key: the run's base PRNG key.
    """

    params: Any
    opt_state: Any
    history: dict
    step: jax.Array
    key: jax.Array

    @property
    def state(self) -> FitState:
        """The :class:`FitState` to continue from."""
        return FitState(self.params, self.opt_state, self.step, self.key)
