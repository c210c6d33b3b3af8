"""Couplings of two minibatches for flow matching: minibatch optimal transport and reflow.

Pairing ``x0`` and ``x1`` by optimal transport on each minibatch straightens the paths
flow matching learns (Tong et al., 2024, "Improving and generalizing flow-based generative
models with minibatch optimal transport"; Pooladian et al., 2023). Rectified-flow reflow
(Liu et al., 2023) re-pairs each ``x0`` with the end point of the learned ODE.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.flows.ode import solve_ode


class _Auction(NamedTuple):
    prices: jax.Array
    person_obj: jax.Array
    obj_person: jax.Array
    rounds: jax.Array


def assignment(cost: jax.Array, num_phases: int = 8, max_rounds: int = 20_000) -> jax.Array:
    """Exact minimum-cost assignment by Bertsekas's auction algorithm with eps-scaling.

    Rows (persons) bid in parallel (Jacobi auction); ``eps`` shrinks geometrically to
    ``1e-4 / n`` of the cost range, so the total cost is within ``1e-4`` of the range of the
    optimum (exact for generic real costs at small ``n``). Pure JAX: jit-able and vmappable.

    Args:
      cost: ``(n, n)`` cost matrix.
      num_phases: number of eps-scaling phases.
      max_rounds: safety cap on bidding rounds per phase.

    Returns:
      ``perm`` of shape ``(n,)``: row ``i`` is assigned column ``perm[i]``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> pg.flows.assignment(jnp.array([[1.0, 0.0], [0.0, 1.0]])).tolist()
        [1, 0]
    """
    cost = jnp.asarray(cost)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"assignment: cost must be square (n, n), got shape {cost.shape}")
    n = cost.shape[0]
    if n == 1:
        return jnp.zeros((1,), jnp.int32)
    span = jnp.maximum(jnp.max(cost) - jnp.min(cost), 1e-12)
    benefit = -(cost - jnp.min(cost)) / span  # in [-1, 0]
    eps_final = 1e-4 / n
    eps_first = 0.25
    ratio = (eps_final / eps_first) ** (1.0 / max(num_phases - 1, 1))
    idx = jnp.arange(n)

    def bid_round(state, eps):
        unassigned = state.person_obj < 0
        values = benefit - state.prices[None, :]
        top_vals, top_idx = jax.lax.top_k(values, 2)
        target = top_idx[:, 0]
        bid = state.prices[target] + top_vals[:, 0] - top_vals[:, 1] + eps
        bids = jnp.where((target[:, None] == idx[None, :]) & unassigned[:, None], bid[:, None], -jnp.inf)
        best_bid, winner = jnp.max(bids, 0), jnp.argmax(bids, 0)
        has_bid = jnp.isfinite(best_bid)
        obj_person = jnp.where(has_bid, winner, state.obj_person)
        prices = jnp.where(has_bid, best_bid, state.prices)
        owned = obj_person >= 0
        person_obj = jnp.full((n,), -1).at[jnp.where(owned, obj_person, n)].set(idx, mode="drop")
        return _Auction(prices, person_obj, obj_person, state.rounds + 1)

    def phase(k, prices):
        eps = eps_first * ratio**k
        state = _Auction(prices, jnp.full((n,), -1), jnp.full((n,), -1), jnp.zeros((), jnp.int32))
        state = jax.lax.while_loop(
            lambda s: jnp.any(s.person_obj < 0) & (s.rounds < max_rounds),
            lambda s: bid_round(s, eps),
            state,
        )
        return state

    prices = jnp.zeros((n,))
    for k in range(num_phases - 1):
        prices = phase(k, prices).prices
    return phase(num_phases - 1, prices).person_obj


def sinkhorn_plan(cost: jax.Array, reg: float = 0.05, num_iters: int = 200) -> jax.Array:
    """Entropic OT plan between uniform marginals (log-domain Sinkhorn; rows sum to ``1/n``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> plan = pg.flows.sinkhorn_plan(jnp.array([[0.0, 1.0], [1.0, 0.0]]), reg=0.01)
        >>> [round(float(v), 3) for v in plan[0]]
        [0.5, 0.0]
    """
    cost = jnp.asarray(cost)
    n, m = cost.shape
    log_k = -cost / (reg * jnp.maximum(jnp.mean(cost), 1e-12))
    log_a, log_b = -jnp.log(n) * jnp.ones(n), -jnp.log(m) * jnp.ones(m)

    def body(carry, _):
        f, g = carry
        f = log_a - jax.nn.logsumexp(log_k + g[None, :], 1)
        g = log_b - jax.nn.logsumexp(log_k + f[:, None], 0)
        return (f, g), None

    (f, g), _ = jax.lax.scan(body, (jnp.zeros(n), jnp.zeros(m)), None, length=num_iters)
    return jnp.exp(f[:, None] + log_k + g[None, :])


def ot_coupling(x0: jax.Array, x1: jax.Array, method: str = "exact", key: jax.Array | None = None,
                reg: float = 0.05) -> tuple[jax.Array, jax.Array]:
    """Re-pair a minibatch by optimal transport under squared Euclidean cost.

    Args:
      x0, x1: ``(batch, dim)`` independent draws.
      method: ``"exact"`` (auction assignment; a permutation of ``x1``) or
        ``"sinkhorn"`` (draw each partner from the entropic plan's row; needs ``key``).
      key: PRNG key for ``"sinkhorn"``.
      reg: entropic regularization relative to the mean cost.

    Returns:
      ``(x0, x1_paired)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> x0 = jnp.array([[0.0], [1.0]]); x1 = jnp.array([[1.1], [0.1]])
        >>> pg.flows.ot_coupling(x0, x1)[1].ravel().tolist()
        [0.10000000149011612, 1.100000023841858]
    """
    if x0.ndim != 2 or x0.shape != x1.shape:
        raise ValueError(f"ot_coupling: x0 and x1 must have equal shapes (batch, dim); got {x0.shape}, {x1.shape}")
    cost = jnp.sum((x0[:, None, :] - x1[None, :, :]) ** 2, -1)
    if method == "exact":
        return x0, x1[assignment(cost)]
    if method == "sinkhorn":
        if key is None:
            raise ValueError("ot_coupling: method='sinkhorn' needs a key to draw partners")
        plan = sinkhorn_plan(cost, reg)
        partners = jax.random.categorical(key, jnp.log(plan + 1e-30), axis=1)
        return x0, x1[partners]
    raise ValueError(f"ot_coupling: method must be 'exact' or 'sinkhorn', got {method!r}")


def reflow_pairs(velocity: Callable, x0: jax.Array, num_steps: int = 50, method: str = "rk4"):
    """Rectified-flow reflow: pair each ``x0`` with the end point of ``dx = velocity dt``.

    Training a new velocity on these pairs straightens the flow (Liu et al., 2023,
    "Flow Straight and Fast"); the returned ``x1`` has the learned model's distribution.

    Args:
      velocity: ``velocity(t, x)`` for one point.
      x0: ``(batch, dim)`` base draws.

    Returns:
      ``(x0, x1)`` with ``x1 = ODE(x0)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> pg.flows.reflow_pairs(lambda t, x: jnp.ones_like(x), jnp.zeros((3, 2)), 4)[1].tolist()[0]
        [1.0, 1.0]
    """
    x1 = jax.vmap(lambda x: solve_ode(velocity, x, 0.0, 1.0, num_steps, method))(x0)
    return x0, x1
