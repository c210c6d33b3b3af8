"""Particle smoothing: whole latent trajectories from a particle filter's stored steps.

A filter run that keeps every step (``pg.mc.smc(..., keep="all")``, or
``pg.run(pf, key, state, T, keep="all")``) holds the weighted filtering particles of each
time step and the ancestor indices of each resampling. Two smoothers turn them into
trajectories of the scan model, each with a leading trajectory axis, then time:

- :func:`genealogy_smoother` follows each final particle's ancestry back through the
  stored ancestor indices (the "ancestral paths" of the filter): free, but the paths
  coalesce as they go back (path degeneracy), so only the last steps are well represented;
- :func:`backward_simulation_smoother` draws trajectories backward in time, reweighting
  each step's filtering particles by the transition density to the step already drawn
  (Godsill, Doucet & West 2004): ``O(N M T)`` for ``M`` trajectories, no degeneracy.

Reference: Godsill, Doucet & West, "Monte Carlo smoothing for nonlinear time series",
JASA 2004; Doucet & Johansen, "A tutorial on particle filtering and smoothing", 2009, §5.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap
from probgen.core.combinators import Scan
from probgen.core.errors import ArgumentError, ConstraintError
from probgen.core.numerics import _logsumexp
from probgen.core.validation import check
from probgen.mc.smc import ParticleState, SMCInfo
from probgen.core.keys import particle_keys


class SmoothedPaths(NamedTuple):
    """Smoothed trajectories of a ``pg.scan`` model, leading axes ``(K, T)``.

    Attributes:
      choices: every trajectory's choices, ``K`` choice maps of the scan's own layout
        stacked on a leading axis (observed addresses included; at steps whose
        observations were missing, their imputed values).
      carries: the carry after each step of every trajectory, leading axes ``(K, T)``.
      log_weights: ``(K,)`` normalized log weights of the trajectories (``logsumexp`` 0):
        a weighted mean over trajectories estimates a smoothed expectation.
    """

    choices: ChoiceMap
    carries: Any
    log_weights: jax.Array


def _check_filter_states(states, where: str) -> tuple[int, int]:
    """``states`` must be the per-step :class:`ParticleState` of a filter run: ``(T, N)``."""
    if not isinstance(states, ParticleState):
        got = "None (was the filter run with keep='last'?)" if states is None else type(states).__name__
        raise ArgumentError(
            f"{where}: states must be the per-step ParticleState of a filter run, "
            f"pg.mc.smc(..., keep='all').states or the states of pg.run(pf, ..., keep='all'); got {got}"
        )
    if jnp.ndim(states.log_weights) != 2:
        raise ArgumentError(
            f"{where}: states need a leading time axis: log_weights of shape (T, N), got "
            f"{jnp.shape(states.log_weights)}; pass every step's states (keep='all'), not one state"
        )
    return jnp.shape(states.log_weights)


def _paths(states: ParticleState, indices: jax.Array, log_weights: jax.Array) -> SmoothedPaths:
    """The trajectories that visit particle ``indices[t, k]`` at time ``t``: leading axes ``(K, T)``."""

    def gather(values):
        return jnp.swapaxes(jax.vmap(lambda v_t, i_t: v_t[i_t])(values, indices), 0, 1)

    return SmoothedPaths(jax.tree.map(gather, states.choices), jax.tree.map(gather, states.carry), log_weights)


def genealogy_smoother(states: ParticleState, infos: SMCInfo) -> SmoothedPaths:
    """The ancestral paths of a particle filter's final particles (the genealogy smoother).

    Particle ``i`` at the last step descends, through the ancestor indices each resampling
    stored (``infos.ancestors``), from one particle of every earlier step; the path through
    them is a trajectory, and the final filtering weights weight the ``N`` trajectories
    into an estimate of the joint smoothing distribution ``p(z_{0:T-1} | y_{0:T-1})``
    (Kitagawa 1996). The backtrace is one reverse ``lax.scan``. Cheap, but after ``k``
    resamplings back the paths share few ancestors (path degeneracy): estimates of early
    steps rest on few distinct particles. Use it for the last steps or the final-time
    marginal; :func:`backward_simulation_smoother` for the whole path.

    Args:
      states: the per-step :class:`ParticleState` of a filter run, leading axes ``(T, N)``
        (``pg.mc.smc(..., keep="all").states``).
      infos: the matching per-step :class:`SMCInfo` (its ``ancestors``, ``(T, N)``).

    Returns:
      :class:`SmoothedPaths` with ``N`` trajectories (leading axes ``(N, T)``); the last
      step of trajectory ``i`` is the final filtering particle ``i``, and ``log_weights``
      are the final filtering weights, normalized.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def walk(z, _):
        ...     z = pg.sample("z", pg.Normal(z, 1.0))
        ...     pg.sample("y", pg.Normal(z, 0.5))
        ...     return z, None
        >>> model, ys = pg.scan(walk, length=10), {"y": jnp.linspace(0.0, 3.0, 10)}
        >>> result = pg.mc.smc(jax.random.key(0), model, ys, 0.0, num_particles=200)
        >>> paths = pg.mc.genealogy_smoother(result.states, result.infos)
        >>> paths.choices["z"].shape, paths.log_weights.shape
        ((200, 10), (200,))
        >>> bool(jnp.all(paths.choices["z"][:, -1] == result.final.choices["z"]))
        True
    """
    where = "genealogy_smoother"
    num_steps, num_particles = _check_filter_states(states, where)
    if not isinstance(infos, SMCInfo) or jnp.shape(infos.ancestors) != (num_steps, num_particles):
        got = jnp.shape(infos.ancestors) if isinstance(infos, SMCInfo) else type(infos).__name__
        raise ArgumentError(
            f"{where}: infos must be the per-step SMCInfo of the same run, with ancestors of shape "
            f"{(num_steps, num_particles)}; got {got}"
        )

    def back(index, ancestors_t):
        # ancestors_t[i]: the particle of step t-1 that particle i of step t descends from.
        return ancestors_t[index], index

    final = jnp.arange(num_particles, dtype=infos.ancestors.dtype)
    first, later = jax.lax.scan(back, final, infos.ancestors[1:], reverse=True)
    indices = jnp.concatenate([first[None], later])
    last = states.log_weights[-1]
    return _paths(states, indices, last - _logsumexp(last))


def _same_carry(recomputed, stored) -> jax.Array:
    """Whether two carries agree (floats to a loose relative tolerance, the rest exactly)."""

    def leaf(a, b):
        if jnp.issubdtype(b.dtype, jnp.inexact):
            tol = jnp.sqrt(jnp.finfo(b.dtype).eps)
            return jnp.all(jnp.abs(a - b) <= tol * (1 + jnp.abs(b)))
        return jnp.all(a == b)

    agree = [leaf(a, b) for a, b in zip(jax.tree.leaves(recomputed), jax.tree.leaves(stored))]
    return jnp.all(jnp.stack(agree)) if agree else jnp.asarray(True)


def backward_simulation_smoother(key: jax.Array, model: Scan, states: ParticleState, xs=None, *,
                                 num_samples: int) -> SmoothedPaths:
    """Draw trajectories from a particle approximation of the smoothing distribution, backward.

    The backward-simulation smoother (Godsill, Doucet & West 2004): draw the last step's
    particle ``b_{T-1}`` with probability ``w_{T-1}^i``; then, for ``t = T-2, ..., 0``,
    draw ``b_t = i`` with probability proportional to

        ``w_t^i * p(choices_{t+1}^{b_{t+1}} | carry_t^i, x_{t+1})``,

    the filtering weight times the density of the already drawn next step given particle
    ``i``'s carry. That density is the step GF's ``assess`` of all the step's choices:
    ``p(z_{t+1}, y_{t+1} | carry_t^i)``. Its observation factor ``p(y_{t+1} | z_{t+1})``
    does not depend on ``i`` when the observation depends only on the new state, so it
    cancels in the normalization over ``i`` and the weights are the textbook
    ``w_t^i p(z_{t+1} | z_t^i)``; when the observation also depends on the previous carry,
    keeping it is what makes the draw exact. One reverse ``lax.scan`` over time, vmapped
    over the ``num_samples`` trajectories: ``O(N M T)`` density evaluations; each
    trajectory is an unweighted draw, and the trajectories share the one filter run.

    The carry must be the model's state: the carry a step returns must be a function of
    that step's choices (and ``x``) only, e.g. ``z = pg.sample("z", ...); return z, y``,
    or carry through unchanged what is the same for every particle. A step such as
    ``position = position + pg.sample("jitter", ...)`` (the state is the previous carry
    plus a choice) has no density of the next state in its choices; sample the state
    itself instead, ``pg.sample("position", pg.Normal(position, ...))``. Under
    :func:`pg.validate` a carry that depends on more raises a ``ValidationError``.

    Args:
      key: a PRNG key.
      model: the ``pg.scan`` model the filter ran on.
      states: the per-step :class:`ParticleState` of the filter run, leading axes ``(T, N)``
        (``pg.mc.smc(..., keep="all").states``).
      xs: the scan's per-step inputs the filter used (leading time axis) or None.
      num_samples: how many trajectories ``M`` to draw (a static positive int).

    Returns:
      :class:`SmoothedPaths` with ``M`` trajectories (leading axes ``(M, T)``) and equal
      ``log_weights`` ``-log M``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def walk(z, _):
        ...     z = pg.sample("z", pg.Normal(z, 1.0))
        ...     pg.sample("y", pg.Normal(z, 0.5))
        ...     return z, None
        >>> model, ys = pg.scan(walk, length=10), {"y": jnp.linspace(0.0, 3.0, 10)}
        >>> result = pg.mc.smc(jax.random.key(0), model, ys, 0.0, num_particles=200)
        >>> paths = pg.mc.backward_simulation_smoother(jax.random.key(1), model, result.states, num_samples=50)
        >>> paths.choices["z"].shape, paths.carries.shape
        ((50, 10), (50, 10))
        >>> smoothed_means = paths.choices["z"].mean(axis=0)
    """
    where = "backward_simulation_smoother"
    if not isinstance(model, Scan):
        raise ArgumentError(f"{where}: model must be the pg.scan(...) model the filter ran on, "
                            f"got {type(model).__name__}")
    num_samples = static_int(num_samples, "num_samples", where)
    num_steps, num_particles = _check_filter_states(states, where)
    if model._length(xs) != num_steps:
        raise ConstraintError(
            f"{where}: xs (or the model's length) has {model._length(xs)} time steps, but states has "
            f"{num_steps}; give the xs the filter ran with"
        )
    step_gf, dtype = model.kernel, states.log_weights.dtype
    k_last, k_back = jax.random.split(key)
    last = jax.random.categorical(k_last, states.log_weights[-1], shape=(num_samples,))

    def later(tree):
        return jax.tree.map(lambda v: v[1:], tree)

    def back(key, step_inputs, index_next):
        t, carries_t, log_weights_t, choices_next, carries_next, x_next = step_inputs
        chosen = jax.tree.map(lambda v: v[index_next], choices_next)
        log_transition, (carries_recomputed, _) = jax.vmap(lambda c: step_gf.assess(chosen, c, x_next))(carries_t)
        stored = jax.tree.map(lambda v: v[index_next], carries_next)
        check(_same_carry(carries_recomputed, jax.tree.map(lambda v: v[None], stored)),
              f"{where}: the carry that the kernel of {model.__name__} returns at step {{step}} depends on the "
              "previous carry beyond the step's choices; backward simulation needs the carry to be a function "
              "of the step's choices (sample the state itself, e.g. z = pg.sample('z', ...); return z, y)",
              step=t + 1)
        return jax.random.categorical(key, log_weights_t + log_transition.astype(dtype))

    def one_path(key, index_last):
        keys = jax.random.split(key, num_steps - 1)

        def body(index_next, inputs):
            index = back(inputs[0], inputs[1:], index_next)
            return index, index

        step_inputs = (keys, jnp.arange(num_steps - 1), jax.tree.map(lambda v: v[:-1], states.carry),
                       states.log_weights[:-1], later(states.choices), later(states.carry), later(xs))
        _, indices = jax.lax.scan(body, index_last, step_inputs, reverse=True)
        return jnp.concatenate([indices, index_last[None]])

    indices = jax.vmap(one_path)(particle_keys(k_back, num_samples), last)   # (M, T)
    uniform = jnp.full((num_samples,), -jnp.log(jnp.asarray(num_samples, dtype)), dtype)
    return _paths(states, indices.T, uniform)
