"""A scan whose new carry does not depend on its carry runs its steps side by side (one vmap):
the same trace, score and weight as the sequential scan; any carry dependence keeps lax.scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from probgen.core import combinators

T = 50


@pg.gen
def ar_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.5))
    return z, z ** 2


@pg.gen
def accumulating_step(total, _):
    dz = pg.sample("dz", pg.Normal(0.0, 1.0))
    total = total + dz                       # the new carry uses the old one
    pg.sample("y", pg.Normal(total, 0.5))
    return total, total


def _primitives(fn, *args):
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


def _ar_log_density(z, y, z0=0.0):
    prev = jnp.concatenate([jnp.array([z0]), z[:-1]])
    logp = jax.scipy.stats.norm.logpdf(z, 0.9 * prev, 1.0) + jax.scipy.stats.norm.logpdf(y, z, 0.5)
    return jnp.sum(logp)


def _sequential(monkeypatch):
    monkeypatch.setattr(combinators, "PARALLEL_SCAN_BYTES", -1)


def test_assess_runs_in_parallel_and_matches_the_closed_form(monkeypatch):
    model = pg.scan(ar_step, length=T)
    rng = np.random.default_rng(0)
    choices = {"z": jnp.asarray(rng.normal(size=T), jnp.float32), "y": jnp.asarray(rng.normal(size=T), jnp.float32)}
    assess = lambda c: model.assess(c, 0.0, None)  # noqa: E731
    assert "scan" not in _primitives(assess, choices)
    log_p, (final, ys) = jax.jit(assess)(choices)
    np.testing.assert_allclose(log_p, _ar_log_density(choices["z"], choices["y"]), rtol=1e-5)
    np.testing.assert_allclose(final, choices["z"][-1])
    np.testing.assert_allclose(ys, choices["z"] ** 2, rtol=1e-6)
    _sequential(monkeypatch)
    sequential = pg.scan(ar_step, length=T)  # a new GF: compiled calls are cached per GF
    assess = lambda c: sequential.assess(c, 0.0, None)  # noqa: E731
    assert "scan" in _primitives(assess, choices)
    log_p_seq, (final_seq, ys_seq) = jax.jit(assess)(choices)
    np.testing.assert_allclose(log_p, log_p_seq, rtol=1e-5)
    np.testing.assert_allclose(ys, ys_seq, rtol=1e-6)


def test_generate_with_every_latent_given_matches_the_sequential_scan(monkeypatch):
    model = pg.scan(ar_step, length=T)
    key = jax.random.key(1)
    truth = model.simulate(key, 0.0, None)
    run = jax.jit(lambda k, c: model.generate(k, c, 0.0, None))
    trace, weight = run(key, truth.choices)
    assert "scan" not in _primitives(lambda k, c: model.generate(k, c, 0.0, None), key, truth.choices)
    _sequential(monkeypatch)
    sequential = pg.scan(ar_step, length=T)
    assert "scan" in _primitives(lambda k, c: sequential.generate(k, c, 0.0, None), key, truth.choices)
    trace_seq, weight_seq = jax.jit(lambda k, c: sequential.generate(k, c, 0.0, None))(key, truth.choices)
    np.testing.assert_allclose(weight, weight_seq, rtol=1e-5)
    np.testing.assert_allclose(trace.score, trace_seq.score, rtol=1e-5)
    np.testing.assert_allclose(weight, _ar_log_density(truth["z"], truth["y"]), rtol=1e-5)


def test_a_carry_that_depends_on_the_carry_keeps_the_scan():
    model = pg.scan(accumulating_step, length=T)
    key = jax.random.key(2)
    truth = model.simulate(key, 0.0, None)
    assess = lambda c: model.assess(c, 0.0, None)  # noqa: E731
    assert "scan" in _primitives(assess, truth.choices)
    log_p, (final, _) = jax.jit(assess)(truth.choices)
    total = jnp.cumsum(truth["dz"])
    expected = jnp.sum(jax.scipy.stats.norm.logpdf(truth["dz"], 0.0, 1.0)
                       + jax.scipy.stats.norm.logpdf(truth["y"], total, 0.5))
    np.testing.assert_allclose(log_p, expected, rtol=1e-5)
    np.testing.assert_allclose(final, total[-1], rtol=1e-5)


def test_generate_with_latents_to_draw_keeps_the_scan():
    # only y given: z is drawn from a prior that depends on the carry
    model = pg.scan(ar_step, length=T)
    obs = {"y": jnp.zeros(T)}
    assert "scan" in _primitives(lambda k: model.generate(k, obs, 0.0, None), jax.random.key(0))


def test_parallel_assess_gradients_and_vmap_match(monkeypatch):
    model = pg.scan(ar_step, length=T)
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(4, T)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(4, T)), jnp.float32)
    f = lambda z, y: model.assess({"z": z, "y": y}, 0.0, None)[0]  # noqa: E731
    grad = jax.jit(jax.vmap(jax.grad(f)))(z, y)
    expected = jax.vmap(jax.grad(_ar_log_density))(z, y)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_parallel_assess_keeps_the_dtype(dtype):
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs jax_enable_x64")
    model = pg.scan(ar_step, length=T)
    choices = {"z": jnp.zeros(T, dtype), "y": jnp.ones(T, dtype)}
    log_p, (final, _) = model.assess(choices, jnp.zeros((), dtype), None)
    assert log_p.dtype == dtype and final.dtype == dtype
