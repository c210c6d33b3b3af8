"""Combinators against the same models written out by hand (identical scores)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from jax.scipy.special import logsumexp

import probgen as pg


@pg.gen
def point(mu):
    return pg.sample("x", pg.Normal(mu, 1.0))


def test_vmap_score_equals_hand_sum():
    mus = jnp.array([0.0, 1.0, -2.0])
    tr = jax.jit(pg.vmap(point).simulate)(jax.random.key(0), mus)
    assert tr["x"].shape == (3,)
    expected = st.norm(np.asarray(mus), 1.0).logpdf(np.asarray(tr["x"])).sum()
    assert float(tr.score) == pytest.approx(expected, rel=1e-5)
    logp, _ = pg.vmap(point).assess(tr.choices, mus)
    assert float(logp) == pytest.approx(expected, rel=1e-5)


def test_vmap_in_axes_and_partial_constraints():
    @pg.gen
    def obs(mu, sigma):
        z = pg.sample("z", pg.Normal(mu, sigma))
        return pg.sample("y", pg.Normal(z, 1.0))

    plate = pg.vmap(obs, in_axes=(0, None))
    ys = jnp.array([0.5, -0.5, 1.0, 2.0])
    tr, log_w = plate.generate(jax.random.key(1), {"y": ys}, jnp.zeros(4), 2.0)
    assert np.allclose(tr["y"], ys)
    expected = st.norm(np.asarray(tr["z"]), 1.0).logpdf(np.asarray(ys)).sum()
    assert float(log_w) == pytest.approx(expected, rel=1e-5)


def test_repeat_iid():
    tr = pg.repeat(point, 5).simulate(jax.random.key(0), 2.0)
    assert tr["x"].shape == (5,)
    assert float(tr.score) == pytest.approx(st.norm(2.0, 1.0).logpdf(np.asarray(tr["x"])).sum(), rel=1e-5)


@pg.gen
def ar_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.5))
    return z, z


def test_scan_matches_unrolled_model():
    T = 6
    model = pg.scan(ar_step, length=T)
    tr = jax.jit(model.simulate)(jax.random.key(0), 0.3, None)

    @pg.gen
    def unrolled(z0):
        z = z0
        for t in range(T):
            z = pg.sample(f"z{t}", pg.Normal(0.9 * z, 1.0))
            pg.sample(f"y{t}", pg.Normal(z, 0.5))
        return z

    flat = {}
    for t in range(T):
        flat[f"z{t}"] = tr["z"][t]
        flat[f"y{t}"] = tr["y"][t]
    logp, last = unrolled.assess(flat, 0.3)
    assert float(tr.score) == pytest.approx(float(logp), rel=1e-5)
    assert float(tr.retval[0]) == pytest.approx(float(last))
    assert tr.retval[1].shape == (T,)


def test_scan_generate_with_observations_is_bootstrap_weight():
    T = 5
    ys = jnp.linspace(-1, 1, T)
    model = pg.scan(ar_step, length=T)
    tr, log_w = model.generate(jax.random.key(0), {"y": ys}, 0.0, None)
    expected = st.norm(np.asarray(tr["z"]), 0.5).logpdf(np.asarray(ys)).sum()
    assert float(log_w) == pytest.approx(expected, rel=1e-5)


def test_scan_weights_average_to_kalman_evidence():
    # 1-D linear Gaussian SSM: the generate weight is an unbiased evidence estimate.
    T = 4
    ys = jnp.array([0.3, -0.2, 0.8, 0.1])
    model = pg.scan(ar_step, length=T)
    keys = jax.random.split(jax.random.key(7), 40000)
    _, log_w = jax.jit(jax.vmap(lambda k: model.generate(k, {"y": ys}, 0.0, None)))(keys)
    # exact: z ~ N(0, Sigma), y = z + noise; Sigma from the AR(1) recursion
    A = np.zeros((T, T))
    for t in range(T):
        for s in range(t + 1):
            A[t, s] = 0.9 ** (t - s)
    cov = A @ A.T + 0.25 * np.eye(T)
    log_evidence = st.multivariate_normal(np.zeros(T), cov).logpdf(np.asarray(ys))
    ratio = np.exp(np.asarray(log_w, np.float64) - log_evidence)
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / np.sqrt(ratio.size)


def test_scan_compiles_to_same_program_for_any_length():
    def jaxpr_size(T):
        model = pg.scan(ar_step, length=T)
        jaxpr = jax.make_jaxpr(lambda k: model.simulate(k, 0.0, None).score)(jax.random.key(0))
        # Count equations, nested ones included (printed line counts depend on line wrapping).
        def count(j):
            return sum(1 + sum(count(sub) for sub in jax.core.jaxprs_in_params(e.params)) for e in j.eqns)

        return count(jaxpr.jaxpr)

    assert jaxpr_size(10) == jaxpr_size(1000)


def test_switch_and_mix_exact_mixture_density():
    @pg.gen
    def left():
        return pg.sample("x", pg.Normal(-2.0, 1.0))

    @pg.gen
    def right():
        return pg.sample("x", pg.Normal(2.0, 0.5))

    mixture = pg.mix(left, right)
    logits = jnp.log(jnp.array([0.3, 0.7]))
    for component in (0, 1):
        logp, x = mixture.assess({"component": component, ("value", "x"): 0.4}, logits)
        comp = [st.norm(-2, 1), st.norm(2, 0.5)][component]
        assert float(logp) == pytest.approx(np.log([0.3, 0.7][component]) + comp.logpdf(0.4), rel=1e-5)
    # marginal over the component by enumeration equals the mixture density
    logps = jnp.stack([
        mixture.assess({"component": c, ("value", "x"): 0.4}, logits)[0] for c in (0, 1)
    ])
    exact = np.log(0.3 * st.norm(-2, 1).pdf(0.4) + 0.7 * st.norm(2, 0.5).pdf(0.4))
    assert float(logsumexp(logps)) == pytest.approx(exact, rel=1e-5)
    # simulated component frequencies
    trs = jax.vmap(lambda k: mixture.simulate(k, logits))(jax.random.split(jax.random.key(0), 4000))
    freq = float(jnp.mean(trs["component"]))
    assert abs(freq - 0.7) < 4 * np.sqrt(0.21 / 4000)


def test_switch_with_different_addresses_uses_placeholders():
    @pg.gen
    def a():
        return pg.sample("u", pg.Normal(0.0, 1.0))

    @pg.gen
    def b():
        return pg.sample("v", pg.Normal(5.0, 1.0))

    sw = pg.switch(a, b)
    tr = jax.jit(sw.simulate)(jax.random.key(0), 1)
    assert np.isnan(float(tr["u"])) and not np.isnan(float(tr["v"]))
    assert float(tr.score) == pytest.approx(st.norm(5, 1).logpdf(float(tr["v"])), rel=1e-5)
    logp, _ = sw.assess({"v": 4.0}, 1)
    assert float(logp) == pytest.approx(st.norm(5, 1).logpdf(4.0), rel=1e-5)


def test_nesting_scan_of_vmap_of_switch():
    @pg.gen
    def a(m):
        return pg.sample("x", pg.Normal(m, 1.0))

    @pg.gen
    def b(m):
        return pg.sample("x", pg.Normal(-m, 2.0))

    sw = pg.switch(a, b)

    @pg.gen
    def step(carry, idx):
        xs = pg.sample("plate", pg.vmap(sw, in_axes=(0, None)), idx, carry)
        return jnp.mean(xs), None

    model = pg.scan(step)
    idxs = jnp.array([[0, 1, 1], [1, 0, 0]])
    tr = jax.jit(model.simulate)(jax.random.key(0), 0.5, idxs)
    assert tr["plate", "x"].shape == (2, 3)
    x = np.asarray(tr["plate", "x"])
    carry, expected = 0.5, 0.0
    for t in range(2):
        for j in range(3):
            comp = st.norm(carry, 1.0) if idxs[t, j] == 0 else st.norm(-carry, 2.0)
            expected += comp.logpdf(x[t, j])
        carry = x[t].mean()
    assert float(tr.score) == pytest.approx(expected, rel=1e-5)
    logp, _ = model.assess(tr.choices, 0.5, idxs)
    assert float(logp) == pytest.approx(expected, rel=1e-5)
