"""Clustering as a GFlowNet environment: assign ``N`` points to ``K`` clusters, one point per step.

The latent of a clustering model is an assignment vector ``z`` in ``{0..K-1}^N``. The
environment :func:`cluster_assignment` builds it left to right: the state is the partial
assignment (``-1`` for the points not assigned yet), action ``k`` puts the next point in
cluster ``k``, and the full assignment is terminal after exactly ``N`` steps. Each state has
one parent, so the state graph is a tree: the backward policy is trivial and ``log P_F(tau)``
is the exact log probability of the sampled assignment. Small instances are listable
(``sum_t K^t`` states: 1,093 for ``N = 6, K = 3``), for exact evaluation.

:func:`gaussian_clustering_log_joint` is the model GFlowNet-EM (:mod:`probgen.gfn.em`)
learns with it: each data point is a set of ``N`` observations in ``R^D``, clustered by a
Dirichlet-multinomial prior over ``z`` (cluster proportions integrated out, so the
posterior over ``z`` does not factorize over points) with Gaussian clusters whose means and
scales are shared across the data set.

Reference: Hu et al., "GFlowNet-EM for learning compositional latent variable models",
ICML 2023.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError
from probgen.gfn.envs import Environment, default_float, environment

_MAX_LISTED_STATES = 1 << 22


def cluster_assignment(
    num_points: int, num_clusters: int, *, log_reward: Callable[[jax.Array], jax.Array] | None = None
) -> Environment:
    """Assign ``num_points`` points to ``num_clusters`` clusters, one point per step, in order.

    The state is ``{"assignment": int32[num_points]}``, ``-1`` for points not assigned yet.
    Forward action ``k`` assigns the next point (the first ``-1``) to cluster ``k``; the full
    assignment is terminal (``max_steps = num_points``, no exit action). The single backward
    action un-assigns the last assigned point (a tree: ``P_B = 1``). Features are the
    one-hot encodings of the slots, unassigned included (``num_points * (num_clusters + 1)``
    floats). States are listable up to 2^22 of them.

    Args:
      num_points: ``N``.
      num_clusters: ``K``.
      log_reward: ``assignment -> scalar`` (``int32[N]``, ``-1`` where unassigned), the
        environment's own log reward; default 0 everywhere (GFlowNet-EM passes its learned
        reward to the objectives instead, see :func:`~probgen.gfn.em.gflownet_em`).

    Returns:
      An :class:`~probgen.gfn.envs.Environment`.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.cluster_assignment(num_points=3, num_clusters=2)
        >>> s = env.step(env.step(env.initial_state, 1), 0)
        >>> s["assignment"].tolist(), env.num_states, env.max_steps
        ([1, 0, -1], 15, 3)
    """
    where = "cluster_assignment"
    num_points = static_int(num_points, "num_points", where)
    num_clusters = static_int(num_clusters, "num_clusters", where)
    if log_reward is not None and not callable(log_reward):
        raise ArgumentError(f"{where}: log_reward must be a function assignment -> scalar, got "
                            f"{type(log_reward).__name__}")
    slots = jnp.arange(num_points)

    def count(state):
        return jnp.sum(state["assignment"] >= 0).astype(jnp.int32)

    def forward_mask(state):
        return jnp.broadcast_to(count(state) < num_points, (num_clusters,))

    def step(state, action):
        placed = jnp.where(slots == count(state), jnp.asarray(action, jnp.int32), state["assignment"])
        return {"assignment": placed.astype(jnp.int32)}

    def backward_mask(state):
        return (count(state) > 0)[None]

    def backward_step(state, action):
        return {"assignment": jnp.where(slots == count(state) - 1, -1, state["assignment"]).astype(jnp.int32)}

    def forward_action(state, action):
        return state["assignment"][jnp.maximum(count(state) - 1, 0)].astype(jnp.int32)

    def reward(state):
        if log_reward is None:
            return jnp.zeros((), default_float())
        return jnp.asarray(log_reward(state["assignment"]))

    def features(state):
        return jax.nn.one_hot(state["assignment"] + 1, num_clusters + 1, dtype=default_float()).reshape(-1)

    sizes = [num_clusters ** t for t in range(num_points + 1)]
    num_states = sum(sizes)
    listable = num_states <= _MAX_LISTED_STATES
    offsets = jnp.asarray(np.concatenate([[0], np.cumsum(sizes[:-1])]), jnp.int32) if listable else None
    powers = jnp.asarray([num_clusters ** i for i in range(num_points)], jnp.int32) if listable else None

    def state_index(state):
        z = state["assignment"]
        return (offsets[count(state)] + jnp.sum(jnp.where(z >= 0, z, 0) * powers)).astype(jnp.int32)

    def all_states():
        rows = []
        for t, size in enumerate(sizes):
            codes = np.arange(size)
            digits = (codes[:, None] // np.asarray([num_clusters ** i for i in range(t)], np.int64)) % num_clusters
            rows.append(np.concatenate([digits.reshape(size, t), -np.ones((size, num_points - t), np.int64)], 1))
        return {"assignment": jnp.asarray(np.concatenate(rows), jnp.int32)}

    initial = {"assignment": -jnp.ones(num_points, jnp.int32)}
    return environment(
        initial, forward_mask=forward_mask, step=step, backward_mask=backward_mask, backward_step=backward_step,
        is_terminal=lambda s: count(s) == num_points, log_reward=reward, num_actions=num_clusters,
        num_backward_actions=1, max_steps=num_points, features=features,
        backward_action=lambda s, a: jnp.zeros((), jnp.int32), forward_action=forward_action,
        num_states=num_states if listable else None, all_states=all_states if listable else None,
        state_index=state_index if listable else None,
        name=f"cluster_assignment(num_points={num_points}, num_clusters={num_clusters})",
    )


def gaussian_clustering_log_joint(model_params: Any, state: Any, x: jax.Array) -> jax.Array:
    """``log p(x, z)`` of a Dirichlet-multinomial mixture of isotropic Gaussians, ``z`` a (partial) assignment.

    With ``K`` clusters, concentration ``alpha``, means ``mu_k`` and scales ``sigma_k``::

        z ~ DirichletMultinomial(alpha, ..., alpha)     (proportions integrated out)
        x_i | z_i ~ Normal(mu_{z_i}, sigma_{z_i}^2 I_D)

    so ``log p(z) = log G(K alpha) - log G(n + K alpha) + sum_k [log G(n_k + alpha) -
    log G(alpha)]`` for the ``n`` assigned points (``G`` the gamma function). On a partial
    assignment (``-1`` entries) it is the joint of the assigned points only, ``log p(x_{<t},
    z_{<t})``, so objectives that read the reward at every state (forward-looking balance)
    get the natural energy. The signature is the ``log_joint(model_params, state, x)`` of
    :func:`~probgen.gfn.em.gflownet_em`.

    Args:
      model_params: ``{"means": (K, D), "log_scale": () or (K,), "log_concentration": ()}``.
      state: a :func:`cluster_assignment` state, ``{"assignment": int32[N]}``.
      x: the ``N`` observations, ``(N, D)``.

    Returns:
      A scalar.

    Raises:
      ArgumentError: missing entries, or shapes that do not match (named in the message).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> theta = {"means": jnp.array([[-1.0], [1.0]]), "log_scale": jnp.array(0.0),
        ...          "log_concentration": jnp.array(0.0)}
        >>> z = {"assignment": jnp.array([0, 1], jnp.int32)}
        >>> x = jnp.array([[-1.0], [1.0]])     # each point at its mean; p(z) = 1/6 with alpha = 1
        >>> round(float(pg.gfn.gaussian_clustering_log_joint(theta, z, x)), 4)   # log(1/6) - log(2 pi)
        -3.6296
    """
    where = "gaussian_clustering_log_joint"
    for name in ("means", "log_scale", "log_concentration"):
        if name not in model_params:
            raise ArgumentError(f"{where}: model_params has no {name!r} entry (present: {sorted(model_params)})")
    means = jnp.asarray(model_params["means"])
    x = jnp.asarray(x)
    z = jnp.asarray(state["assignment"])
    if means.ndim != 2:
        raise ArgumentError(f"{where}: model_params['means'] must have shape (K, D), got {tuple(means.shape)}")
    num_clusters, dim = means.shape
    if x.ndim != 2 or x.shape != (z.shape[0], dim):
        raise ArgumentError(f"{where}: x has shape {tuple(x.shape)}, expected (num_points, D) = "
                            f"({z.shape[0]}, {dim}) from the assignment and the means")
    log_scale = jnp.asarray(model_params["log_scale"])
    if log_scale.shape not in ((), (num_clusters,)):
        raise ArgumentError(f"{where}: model_params['log_scale'] must have shape () or ({num_clusters},), got "
                            f"{tuple(log_scale.shape)}")
    log_alpha = jnp.asarray(model_params["log_concentration"])
    if log_alpha.shape != ():
        raise ArgumentError(f"{where}: model_params['log_concentration'] must be a scalar, got shape "
                            f"{tuple(log_alpha.shape)}")
    dtype = jnp.result_type(means.dtype, x.dtype, log_scale.dtype, log_alpha.dtype)
    assigned = z >= 0
    safe = jnp.where(assigned, z, 0)
    counts = jnp.sum(jax.nn.one_hot(safe, num_clusters, dtype=dtype) * assigned[:, None], axis=0)
    alpha = jnp.exp(log_alpha.astype(dtype))
    gammaln = jax.scipy.special.gammaln
    log_prior = (gammaln(num_clusters * alpha) - gammaln(jnp.sum(counts) + num_clusters * alpha)
                 + jnp.sum(gammaln(counts + alpha) - gammaln(alpha)))
    log_sigma = jnp.broadcast_to(log_scale.astype(dtype), (num_clusters,))[safe]
    squared = jnp.sum((x.astype(dtype) - means.astype(dtype)[safe]) ** 2, axis=-1)
    per_point = -0.5 * dim * jnp.log(2 * jnp.pi).astype(dtype) - dim * log_sigma - 0.5 * squared * jnp.exp(
        -2 * log_sigma)
    return log_prior + jnp.sum(jnp.where(assigned, per_point, 0.0))
