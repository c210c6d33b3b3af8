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
import numpy as np

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.numerics import as_float
from probgen.dynamics import solve_ode


class _Auction(NamedTuple):
    prices: jax.Array  # (n,) object prices, in units of the cost range
    person_obj: jax.Array  # (n,) object held by each row, -1 if none
    obj_person: jax.Array  # (n,) row holding each object, -1 if none
    free: jax.Array  # number of unassigned rows
    bids: jax.Array  # bids made in the current phase


def assignment(cost: jax.Array, num_phases: int = 8, max_rounds: int | None = None,
               tol: float = 1e-4) -> jax.Array:
    """Minimum-cost assignment by Bertsekas's auction algorithm with eps-scaling.

    Gauss-Seidel auction (one row bids per step, each step ``O(n)``) over ``num_phases``
    phases whose ``eps`` shrinks geometrically from ``0.1`` to
    ``eps_final = max(tol / n, 1e-6)`` (in units of the cost range). Prices carry over
    between phases and assignments that still satisfy eps-complementary slackness are kept,
    so later phases only repair a few rows (Bertsekas, 1988, "The auction algorithm: a
    distributed relaxation method for the assignment problem").

    Guarantee: when the last phase finishes within ``max_rounds`` bids, the total cost is at
    most ``optimum + n * eps_final * (max(cost) - min(cost))`` (with the default ``tol``,
    ``<= 1e-4`` of the range for ``n <= 100``, ``n * 1e-6`` of it beyond); this is exact
    whenever the second-best assignment is worse by more than that. The work is bounded by
    the static ``num_phases * max_rounds`` bids; a phase that hits the cap hands its
    unassigned rows to the next phase, and if the last one hits it the leftover rows take
    the free columns in index order (still a permutation, no longer near-optimal). At
    ``n = 256`` with squared-Euclidean costs a call takes ~10^4 bids (tens of ms on a CPU).
    Pure JAX: jit-able and vmappable.

    Args:
      cost: ``(n, n)`` cost matrix.
      num_phases: number of eps-scaling phases (static).
      max_rounds: cap on bids per phase (static); default ``50 * n``.
      tol: target accuracy relative to the cost range (see above).

    Returns:
      ``perm`` of shape ``(n,)``: row ``i`` is assigned column ``perm[i]``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> pg.flows.assignment(jnp.array([[1.0, 0.0], [0.0, 1.0]])).tolist()
        [1, 0]
    """
    cost = jnp.asarray(cost)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise SettingError(f"assignment: cost must be square (n, n), got shape {cost.shape}")
    num_phases = static_int(num_phases, "num_phases", "assignment")
    n = cost.shape[0]
    max_rounds = 50 * n if max_rounds is None else static_int(max_rounds, "max_rounds", "assignment")
    if n == 1:
        return jnp.zeros((1,), jnp.int32)
    span = jnp.maximum(jnp.max(cost) - jnp.min(cost), 1e-30)
    benefit = -(cost - jnp.min(cost)) / span  # in [-1, 0]
    eps_final = max(tol / n, 1e-6)  # float32 prices are O(1): keep eps a few ulps or more
    eps_first = max(0.1, eps_final)
    ratio = (eps_final / eps_first) ** (1.0 / max(num_phases - 1, 1))
    idx = jnp.arange(n)
    none = jnp.full((n,), -1)

    def bid(s, eps):
        i = jnp.argmin(s.person_obj)  # an unassigned row
        values = benefit[i] - s.prices
        j = jnp.argmax(values)
        second = jnp.max(jnp.where(idx == j, -jnp.inf, values))
        prices = s.prices.at[j].add(values[j] - second + eps)
        old = s.obj_person[j]
        person_obj = s.person_obj.at[jnp.where(old >= 0, old, n)].set(-1, mode="drop").at[i].set(j)
        return _Auction(prices, person_obj, s.obj_person.at[j].set(i), s.free - (old < 0), s.bids + 1)

    def phase(s, k):
        eps = (eps_first * ratio**k).astype(benefit.dtype)
        values = benefit - s.prices[None, :]
        held = jnp.take_along_axis(values, jnp.maximum(s.person_obj, 0)[:, None], 1)[:, 0]
        keep = (s.person_obj >= 0) & (held >= jnp.max(values, 1) - eps)
        person_obj = jnp.where(keep, s.person_obj, -1)
        obj_person = none.at[jnp.where(keep, person_obj, n)].set(idx, mode="drop")
        s = _Auction(s.prices, person_obj, obj_person, n - jnp.sum(keep), jnp.zeros((), jnp.int32))
        s = jax.lax.while_loop(lambda s: (s.free > 0) & (s.bids < max_rounds), lambda s: bid(s, eps), s)
        return s, None

    init = _Auction(jnp.zeros((n,), benefit.dtype), none, none, jnp.asarray(n), jnp.zeros((), jnp.int32))
    s, _ = jax.lax.scan(phase, init, jnp.arange(num_phases))
    # Fallback if the last phase hit its cap: the k-th unassigned row takes the k-th free column.
    unassigned = s.person_obj < 0
    free_cols = jnp.argsort(s.obj_person >= 0, stable=True)
    return jnp.where(unassigned, free_cols[jnp.cumsum(unassigned) - 1], s.person_obj)


def sinkhorn_plan(cost: jax.Array, reg: float = 0.05, num_iters: int = 200) -> jax.Array:
    """Entropic OT plan between uniform marginals (log-domain Sinkhorn; rows sum to ``1/n``).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> plan = pg.flows.sinkhorn_plan(jnp.array([[0.0, 1.0], [1.0, 0.0]]), reg=0.01)
        >>> [round(float(v), 3) for v in plan[0]]
        [0.5, 0.0]
    """
    cost = as_float(cost)
    num_iters = static_int(num_iters, "num_iters", "sinkhorn_plan")
    n, m = cost.shape
    log_k = -cost / (reg * jnp.maximum(jnp.mean(cost), 1e-12))
    log_a, log_b = jnp.full(n, -np.log(n), cost.dtype), jnp.full(m, -np.log(m), cost.dtype)

    def body(carry, _):
        f, g = carry
        f = log_a - jax.nn.logsumexp(log_k + g[None, :], 1)
        g = log_b - jax.nn.logsumexp(log_k + f[:, None], 0)
        return (f, g), None

    (f, g), _ = jax.lax.scan(body, (jnp.zeros(n, cost.dtype), jnp.zeros(m, cost.dtype)), None, length=num_iters)
    return jnp.exp(f[:, None] + log_k + g[None, :])


def ot_coupling(x0: jax.Array, x1: jax.Array, method: str = "exact", key: jax.Array | None = None,
                reg: float = 0.05) -> tuple[jax.Array, jax.Array]:
    """Re-pair a minibatch by optimal transport under squared Euclidean cost.

    Args:
      x0, x1: ``(batch, dim)`` independent draws.
      method: ``"exact"`` (auction assignment, see :func:`assignment` for its accuracy bound;
        a permutation of ``x1``) or
        ``"sinkhorn"`` (draw each partner from the entropic plan's row; needs ``key``).
      key: PRNG key for ``"sinkhorn"``.
      reg: entropic regularization relative to the mean cost.

    Returns:
      ``(x0, x1_paired)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> x0 = jnp.array([[0.0], [1.0]]); x1 = jnp.array([[1.1], [0.1]])
        >>> [round(v, 6) for v in pg.flows.ot_coupling(x0, x1)[1].ravel().tolist()]
        [0.1, 1.1]
    """
    if x0.ndim != 2 or x0.shape != x1.shape:
        raise SettingError(f"ot_coupling: x0 and x1 must have equal shapes (batch, dim); got {x0.shape}, {x1.shape}")
    cost = jnp.sum((x0[:, None, :] - x1[None, :, :]) ** 2, -1)
    if method == "exact":
        return x0, x1[assignment(cost)]
    if method == "sinkhorn":
        if key is None:
            raise SettingError("ot_coupling: method='sinkhorn' needs a key to draw partners")
        plan = sinkhorn_plan(cost, reg)
        partners = jax.random.categorical(key, jnp.log(plan + 1e-30), axis=1)
        return x0, x1[partners]
    raise SettingError(f"ot_coupling: method must be 'exact' or 'sinkhorn', got {method!r}")


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
