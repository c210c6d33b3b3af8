"""Minibatch couplings: the bounded auction assignment against scipy's Hungarian solver at
training-size batches, and reflow against the closed-form transport map of Gaussians."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import probgen as pg

ASSIGN = jax.jit(pg.flows.assignment)


def _sq_cost(seed, n):
    k0, k1 = jax.random.split(jax.random.key(seed))
    x0 = jax.random.normal(k0, (n, 2))
    x1 = 0.8 * jax.random.normal(k1, (n, 2)) + 1.0
    return x0, x1, jnp.sum((x0[:, None] - x1[None]) ** 2, -1)


def _bound(cost, n, tol=1e-4):
    return n * max(tol / n, 1e-6) * float(cost.max() - cost.min())


@pytest.mark.parametrize("n", [128, 256])
def test_assignment_matches_scipy_at_batch_size(n):
    _, _, cost = _sq_cost(n, n)
    perm = np.asarray(ASSIGN(cost))  # one jitted call, bounded by num_phases * max_rounds bids
    assert sorted(perm.tolist()) == list(range(n))
    c = np.asarray(cost, np.float64)
    rows, cols = scipy.optimize.linear_sum_assignment(c)
    best = c[rows, cols].sum()
    got = c[np.arange(n), perm].sum()
    assert best - 1e-3 <= got <= best + _bound(c, n) + 1e-3
    assert got / best - 1 < 2e-5


def test_assignment_vmaps_over_uniform_costs():
    costs = jnp.asarray(np.random.default_rng(3).random((4, 24, 24)), jnp.float32)
    perms = np.asarray(jax.jit(jax.vmap(pg.flows.assignment))(costs))
    for c, p in zip(np.asarray(costs, np.float64), perms):
        rows, cols = scipy.optimize.linear_sum_assignment(c)
        assert sorted(p.tolist()) == list(range(24))
        assert c[np.arange(24), p].sum() <= c[rows, cols].sum() + _bound(c, 24) + 1e-5


def test_assignment_cap_fallback_still_a_permutation():
    _, _, cost = _sq_cost(0, 64)
    perm = np.asarray(jax.jit(lambda c: pg.flows.assignment(c, max_rounds=5))(cost))
    assert sorted(perm.tolist()) == list(range(64))
    with pytest.raises(ValueError, match="square"):
        pg.flows.assignment(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="num_phases"):
        pg.flows.assignment(jnp.ones((3, 3)), num_phases=0)


def test_ot_coupling_in_a_jitted_scan_with_gradients():
    """The use that used to stall: OT pairing inside a jitted training scan at batch 128."""
    def body(carry, key):
        x0 = jax.random.normal(key, (128, 2))
        x1 = carry + 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (128, 2))
        g = jax.grad(lambda c: jnp.sum(pg.flows.ot_coupling(x0, x1 * c)[1]))(1.0)
        _, x1p = pg.flows.ot_coupling(x0, x1)
        return carry, (g - jnp.sum(x1), x0, x1, x1p)

    _, (gerr, x0s, x1s, x1ps) = jax.jit(lambda ks: jax.lax.scan(body, jnp.ones(2), ks))(
        jax.random.split(jax.random.key(1), 4))
    np.testing.assert_allclose(gerr, 0.0, atol=1e-2)  # d/dc sum(x1[perm] * c) = sum(x1)
    for x0, x1, x1p in zip(*(np.asarray(a, np.float64) for a in (x0s, x1s, x1ps))):
        cost = ((x0[:, None] - x1[None]) ** 2).sum(-1)
        rows, cols = scipy.optimize.linear_sum_assignment(cost)
        got = ((x1p - x0) ** 2).sum()
        assert sorted(map(tuple, x1p.round(5))) == sorted(map(tuple, x1.round(5)))  # a re-pairing of x1
        assert got <= cost[rows, cols].sum() + _bound(cost, 128) + 1e-3


def test_reflow_pairs_recover_the_monotone_map_and_straighten():
    """N(0, I) -> N(m, s^2 I) under the independent linear interpolant: the marginal velocity is
    v(t, x) = m + c(t) (x - t m), c(t) = (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2), and its
    flow map is x1 = m + s x0 (the OT map), so reflow pairs have cost |m|^2 + d (1 - s)^2."""
    m, s, n, d = jnp.array([2.0, -1.0]), 0.5, 2000, 2

    def velocity(t, x):
        return m + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + (t * s) ** 2) * (x - t * m)

    x0 = jax.random.normal(jax.random.key(0), (n, d))
    x1_ind = m + s * jax.random.normal(jax.random.key(1), (n, d))
    _, x1 = jax.jit(lambda x: pg.flows.reflow_pairs(velocity, x, 50))(x0)
    np.testing.assert_allclose(x1, m + s * x0, atol=1e-4)
    # straightness: the reflow coupling's transport cost matches the OT cost, below independent pairs
    reflow_cost = jnp.sum((x1 - x0) ** 2, -1)
    se = float(jnp.std(reflow_cost)) / np.sqrt(n)
    assert abs(float(jnp.mean(reflow_cost)) - (float(m @ m) + d * (1 - s) ** 2)) < 4 * se
    ind_cost = jnp.sum((x1_ind - x0) ** 2, -1)
    assert float(jnp.mean(reflow_cost)) < float(jnp.mean(ind_cost)) - 4 * float(jnp.std(ind_cost)) / np.sqrt(n)
    # and the learned ODE's own paths bend, while the reflow pairs' interpolation is straight by construction
    ts = jnp.linspace(0.0, 1.0, 11)
    path = jax.vmap(lambda t: m * t + jnp.sqrt((1 - t) ** 2 + (t * s) ** 2) * x0)(ts)  # exact ODE path
    chord = ts[:, None, None] * x1[None] + (1 - ts[:, None, None]) * x0[None]
    assert float(jnp.mean(jnp.sum((path - chord) ** 2, -1))) > 1e-3
