"""Learned transports: flow matching and interpolants between mixtures, sampled and scored
with the pg.dynamics integrators. (The path integral sampler is tested in
tests/flows/test_path_integral.py.)"""

import pytest
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

import probgen as pg
from tests.flows.mixture2d import mixture_log_prob, mixture_samples, projected_ks


def _feats(t):
    return jnp.stack([jnp.sin(jnp.pi * t), jnp.cos(jnp.pi * t), t])


def _velocity(params):
    return lambda t, x: pg.flows.mlp(params, jnp.concatenate([x, _feats(t)]))


def _train_velocity(key, sample_pair, dim, interp, steps, batch=256, ot=False):
    params = pg.flows.init_mlp(key, [dim + 3, 64, 64, dim], final_scale=0.1)
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
    loss = pg.flows.velocity_matching(interp, lambda p, t, x: _velocity(p)(t, x))

    def body(carry, k):
        p, s = carry
        kd, kl = jax.random.split(k)
        x0, x1 = sample_pair(kd, batch)
        if ot:
            x0, x1 = pg.flows.ot_coupling(x0, x1)
        g = jax.grad(loss)(p, kl, (x0, x1))
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.jit(lambda p, ks: jax.lax.scan(body, (p, opt.init(p)), ks))(params, jax.random.split(key, steps))
    return params


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_flow_matching_2d_mixture_samples_and_likelihood():
    pair = lambda k, n: (jax.random.normal(jax.random.fold_in(k, 1), (n, 2)), mixture_samples(k, n))  # noqa: E731
    params = _train_velocity(jax.random.key(0), pair, 2, pg.flows.linear_interpolant(), 1500)
    v = _velocity(params)
    x0 = jax.random.normal(jax.random.key(1), (500, 2))
    x1 = jax.jit(jax.vmap(lambda x: pg.dynamics.solve_ode(v, x, num_steps=20)))(x0)
    p = projected_ks(x1, mixture_samples(jax.random.key(2), 500))
    print(f"flow matching 2-D two-sample p = {p:.3f}")
    assert p > 0.01
    # ODE log-likelihood vs a Monte Carlo estimate: the mean log-likelihood of held-out data
    # equals E[log p_data] - KL(p_data || model); KL must be >= 0 (within 4 se) and small.
    data = mixture_samples(jax.random.key(3), 200)
    base = lambda z: jax.scipy.stats.norm.logpdf(z).sum()  # noqa: E731
    lp_model = jax.jit(jax.vmap(lambda x: pg.dynamics.cnf_log_prob(v, x, base, num_steps=20)))(data)
    gap = jax.vmap(mixture_log_prob)(data) - lp_model
    kl, se = float(jnp.mean(gap)), float(jnp.std(gap)) / np.sqrt(gap.size)
    print(f"KL(data || flow) estimate {kl:.4f} +- {se:.4f}")
    assert -4 * se < kl < 0.15 + 4 * se


def _mix1d(weights, means, stds):
    def sample(key, n):
        kc, kz = jax.random.split(key)
        c = jax.random.choice(kc, len(weights), (n,), p=jnp.asarray(weights))
        return (jnp.asarray(means)[c] + jnp.asarray(stds)[c] * jax.random.normal(kz, (n,)))[:, None]

    def cdf(x):
        return sum(w * scipy.stats.norm.cdf(x, m, s) for w, m, s in zip(weights, means, stds))

    return sample, cdf


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_interpolant_transports_between_1d_mixtures():
    sample0, cdf0 = _mix1d([0.5, 0.5], [-2.0, 2.0], [0.4, 0.4])
    sample1, cdf1 = _mix1d([0.2, 0.8], [-1.0, 3.0], [0.3, 0.6])
    pair = lambda k, n: (sample0(jax.random.fold_in(k, 1), n), sample1(k, n))  # noqa: E731
    params = _train_velocity(jax.random.key(4), pair, 1, pg.flows.trig_interpolant(), 1500)
    x0 = sample0(jax.random.key(5), 400)
    assert scipy.stats.kstest(np.asarray(x0[:, 0]), cdf1).pvalue < 1e-6  # the test has power
    x1 = jax.jit(jax.vmap(lambda x: pg.dynamics.solve_ode(_velocity(params), x, num_steps=20)))(x0)
    p = scipy.stats.kstest(np.asarray(x1[:, 0]), cdf1).pvalue
    print(f"1-D mixture transport KS p = {p:.3f}")
    assert p > 0.01
