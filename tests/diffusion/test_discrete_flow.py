"""Discrete flow matching against exact enumeration on the 27-sequence target.

Ground truths: the target (chi-square tests of the Euler sampler driven by the exact
posterior, for the masked and the uniform source), the sampler's exact law (its one-step law
chained over the states), and the cross-entropy loss's minimizer (the exact posterior).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from tests.diffusion.discrete_target import (
    ALL_MASKED_INDEX,
    K,
    L,
    LOG_P,
    MASKED_STATES,
    PROBS,
    SEQS,
    chain_law,
    chi_square_pvalue,
    clean_part,
    exact_masked_denoiser,
    exact_uniform_denoiser,
    total_variation,
)

D = pg.diffusion
NUM_SAMPLES = 20000
LINEAR, COSINE = D.linear_schedule(), D.cosine_schedule()
# The exact posterior p(x_data | x_t) of each path: the mixture path with the uniform source is
# uniform diffusion's marginal, with the masked source masked diffusion's.
POSTERIOR = {"mask": exact_masked_denoiser, "uniform": exact_uniform_denoiser(LINEAR)}


@functools.lru_cache(maxsize=None)
def _law(source, schedule, method):
    def transition(x_t, x_s, t, s):
        return D.discrete_flow_transition_log_prob(POSTERIOR[source], x_t, x_s, t, s, K, schedule, source, method)

    if source == "mask":
        law = jax.jit(lambda n: chain_law(transition, MASKED_STATES, ALL_MASKED_INDEX, n))
        return lambda n: clean_part(law(n))
    return jax.jit(lambda n: chain_law(transition, SEQS, jnp.full(len(SEQS), 1.0 / len(SEQS)), n))


def _draw(source, schedule, method, num_steps, key):
    """Samples of the Euler sampler, run as two vmapped halves under jit."""
    kernel = D.discrete_flow_euler(POSTERIOR[source], K, num_steps, schedule, source, method)

    def half(k):
        k_start, k_run = jax.random.split(k)
        if source == "mask":
            start = D.all_masked(NUM_SAMPLES // 2, L, K)
        else:
            start = jax.random.randint(k_start, (NUM_SAMPLES // 2, L), 0, K)
        final = pg.run(kernel, k_run, kernel.init(start), num_steps)[0]
        return final.x, final.t

    x, t = jax.jit(jax.vmap(half))(jax.random.split(key, 2))
    assert t.dtype == jnp.result_type(float) and bool(jnp.all(t == 0))
    return np.asarray(x).reshape(NUM_SAMPLES, L)


# Exact bias of the 128-step Euler sampler (TV to the target): 0.0043 (masked source, cosine),
# 0.0044 (uniform source, linear); at 16 steps 0.036, at 64 steps 0.0087.
@pytest.mark.parametrize("source,schedule", [("mask", COSINE), ("uniform", LINEAR)], ids=["mask", "uniform"])
def test_euler_sampler_with_the_exact_posterior_reproduces_the_target(source, schedule):
    num_steps = 128
    law = np.asarray(_law(source, schedule, "euler")(num_steps), np.float64)
    assert total_variation(law, PROBS) < 0.006
    x = _draw(source, schedule, "euler", num_steps, jax.random.key(0))
    assert chi_square_pvalue(x, PROBS) > 1e-3


def test_sampler_law_is_its_transition_log_prob():
    """Three coarse steps: biased, and the samples follow the enumerated law of the kernel."""
    law = np.asarray(_law("uniform", COSINE, "exact")(3), np.float64)
    assert abs(law.sum() - 1) < 1e-4 and total_variation(law, PROBS) > 0.1
    x = _draw("uniform", COSINE, "exact", 3, jax.random.key(1))
    assert chi_square_pvalue(x, law / law.sum()) > 1e-3
    assert chi_square_pvalue(x, PROBS) < 1e-6


def test_masked_source_on_the_linear_path_is_masked_ancestral_sampling():
    """For kappa_s = s the Euler jump probability h / t is the exact unmasking probability."""
    x_t = MASKED_STATES[jax.random.randint(jax.random.key(2), (200,), 0, len(MASKED_STATES))]
    other = MASKED_STATES[jax.random.randint(jax.random.key(3), (200,), 0, 64)]
    x_s = jnp.where((x_t == K) | (jnp.arange(200) >= 150)[:, None], other, x_t)  # the last 50: any move
    flow, ancestral = jax.jit(lambda a, b: (
        D.discrete_flow_transition_log_prob(exact_masked_denoiser, a, b, 0.75, 0.5, K),
        D.masked_transition_log_prob(exact_masked_denoiser, a, b, 0.75, 0.5, K)))(x_t, x_s)
    np.testing.assert_allclose(flow, ancestral, rtol=1e-5, atol=1e-5)
    assert np.isfinite(flow).any() and np.isneginf(flow).any()


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_loss_is_minimized_by_the_exact_posterior(source):
    """The cross-entropy at the exact posterior is below that of its tempered versions (common random numbers)."""
    loss = D.discrete_flow_loss(lambda p, x, t: POSTERIOR[source](x, t) / p, K, LINEAR, source)
    data = SEQS[jax.random.categorical(jax.random.key(4), LOG_P, shape=(512,))]
    temperatures = jnp.array([1.0, 0.6, 1.6])

    @jax.jit
    def losses(key):
        return jax.vmap(lambda temp: loss(temp, key, data))(temperatures)

    draws = np.asarray(jax.vmap(losses)(jax.random.split(jax.random.key(5), 32)), np.float64)
    excess = draws[:, 1:] - draws[:, :1]
    assert np.all(excess.mean(0) > 4 * excess.std(0, ddof=1) / np.sqrt(len(excess)))


def test_bad_input_is_refused():
    with pytest.raises(pg.SettingError, match="source must be one of"):
        D.discrete_flow_euler(exact_masked_denoiser, K, 4, source="gaussian")
    with pytest.raises(pg.SettingError, match="method must be one of"):
        D.discrete_flow_euler(exact_masked_denoiser, K, 4, method="heun")
    with pytest.raises(pg.SettingError, match="jump probability .* exceeds 1"):
        D.discrete_flow_euler(exact_masked_denoiser, K, 100, D.polynomial_schedule(3.0))
    D.discrete_flow_euler(exact_masked_denoiser, K, 100, D.polynomial_schedule(3.0), method="exact")
    with pytest.raises(pg.SettingError, match="num_steps must be a positive int"):
        D.discrete_flow_euler(exact_masked_denoiser, K, 0)
    with pytest.raises(pg.SettingError, match="per-token-class"):
        D.discrete_flow_loss(exact_masked_denoiser, K, D.polynomial_schedule(jnp.ones(K)))
    kernel = D.discrete_flow_euler(POSTERIOR["uniform"], K, 4, source="uniform")
    with pytest.raises(pg.ValidationError, match=r"x must hold token ids in \[0, 2\]"):
        pg.validate(kernel.init)(jnp.array([[0, 3, 1]]))
    loss = pg.validate(D.discrete_flow_loss(lambda p, x, t: exact_masked_denoiser(x, t), K))
    assert np.isfinite(loss(None, jax.random.key(0), SEQS))
    with pytest.raises(pg.ValidationError, match=r"batch must hold token ids in \[0, 2\]"):
        loss(None, jax.random.key(0), SEQS.at[0, 0].set(3))
