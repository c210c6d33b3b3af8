"""A small enumerable target for the discrete diffusion tests, its exact denoisers and exact sampler laws.

Vocabulary ``K = 3``, length ``L = 3``: 27 sequences with an arbitrary non-factorized law.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from probgen.kernels import grid_time

K, L = 3, 3
SEQS = jnp.array(list(itertools.product(range(K), repeat=L)), jnp.int32)  # (27, L), index = base-K digits
MASKED_STATES = jnp.array(list(itertools.product(range(K + 1), repeat=L)), jnp.int32)  # (64, L)
_logits = 1.5 * np.random.default_rng(0).normal(size=len(SEQS))
LOG_P = jnp.asarray(_logits - np.logaddexp.reduce(_logits))  # log p(x), default float dtype
PROBS = np.exp(np.asarray(LOG_P, np.float64))
PROBS = PROBS / PROBS.sum()
_other = 1.5 * np.random.default_rng(1).normal(size=len(SEQS))
OTHER_LOG_P = jnp.asarray(_other - np.logaddexp.reduce(_other))  # another law, for wrong denoisers
_ONE_HOT = jax.nn.one_hot(SEQS, K)  # (27, L, K)


def seq_index(x):
    """Index in SEQS of clean sequences ``x`` (N, L)."""
    return np.asarray(x) @ (K ** np.arange(L - 1, -1, -1))


def chi_square_pvalue(x, probs):
    """Pearson chi-square goodness-of-fit p-value of samples ``x`` (N, L) against a law over SEQS."""
    assert np.all(np.asarray(x) < K), "samples with mask tokens"
    counts = np.bincount(seq_index(x), minlength=len(SEQS))
    expected = len(x) * np.asarray(probs, np.float64)
    keep = expected > 0
    assert counts[~keep].sum() == 0, "samples where the law has no mass"
    stat = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    return float(stats.chi2.sf(stat, keep.sum() - 1))


def total_variation(p, q):
    return 0.5 * float(np.sum(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64))))


def _posterior_marginals(log_weights):
    """Per-position marginals (N, L, K) of the law over SEQS with unnormalized ``log_weights`` (N, 27)."""
    post = jax.nn.softmax(log_weights, axis=-1)
    return jnp.log(jnp.einsum("ns,slk->nlk", post, _ONE_HOT.astype(post.dtype)))


def masked_posterior(log_p):
    """The exact masked-diffusion denoiser of the law ``log_p`` over SEQS: p(x_0^l | unmasked tokens of x).

    It does not depend on t; ``log_p`` may be traced (one compiled function for several laws).
    """

    def denoiser(x, t):
        fits = jnp.all((x[:, None, :] == K) | (x[:, None, :] == SEQS[None]), axis=-1)  # (N, 27)
        return _posterior_marginals(jnp.where(fits, log_p, -jnp.inf))

    return denoiser


exact_masked_denoiser = masked_posterior(LOG_P)
# The product of the target's position marginals: its exact masked denoiser ignores the other
# tokens (each position's data marginal), a deliberately wrong denoiser for the target.
_marginals = jnp.einsum("s,slk->lk", jnp.exp(LOG_P), _ONE_HOT.astype(LOG_P.dtype))
PRODUCT_LOG_P = jnp.sum(jnp.log(_marginals)[jnp.arange(L), SEQS], axis=-1)


def exact_uniform_denoiser(schedule, log_p=LOG_P):
    """p(x_0^l | x_t) under uniform-noise diffusion with ``schedule`` (depends on t) for data ``log_p``."""

    def denoiser(x, t):
        alpha = schedule.alpha(t)[:, None, None]
        noise = schedule.noise_level(t)[:, None, None] / K
        like = jnp.where(x[:, None, :] == SEQS[None], jnp.log(alpha + noise), jnp.log(noise))  # (N, 27, L)
        return _posterior_marginals(log_p + jnp.sum(like, -1))

    return denoiser


def chain_law(transition_log_prob, states, start, num_steps):
    """The exact law over ``states`` after ``num_steps`` grid steps (t = 1 - i/T) from the law ``start``.

    ``transition_log_prob(x_t, x_s, t, s) -> (M,)`` is the sampler's one-step law; ``start``
    is an index into ``states`` or a law over them; ``num_steps`` may be traced (one compile).
    """
    num = states.shape[0]
    from_states = jnp.repeat(states, num, axis=0)
    to_states = jnp.tile(states, (num, 1))
    dtype = jnp.result_type(float)

    def step(i, law):
        t, s = grid_time(i, num_steps, 1.0, 0.0, dtype), grid_time(i + 1, num_steps, 1.0, 0.0, dtype)
        matrix = jnp.exp(transition_log_prob(from_states, to_states, t, s)).reshape(num, num)
        return law @ matrix

    law0 = jnp.zeros(num, dtype).at[start].set(1.0) if jnp.ndim(start) == 0 else jnp.asarray(start, dtype)
    return jax.lax.fori_loop(0, num_steps, step, law0)


def clean_part(law_over_masked_states):
    """The part of a law over MASKED_STATES on the 27 clean sequences, in SEQS order."""
    clean = np.all(np.asarray(MASKED_STATES) < K, axis=1)
    return np.asarray(law_over_masked_states, np.float64)[clean]


ALL_MASKED_INDEX = len(MASKED_STATES) - 1


def quadrature(integrand_mean, num_nodes=48):
    """``int_0^1 f(t) dt`` by Gauss-Legendre in ``u`` with ``t = u^2`` (tames a log singularity at 0).

    ``integrand_mean(t) -> (27,)`` is ``E_{q(x_t|x_0)}[integrand]`` for the 27 sequences at ``t`` (N_nodes,).
    """
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    u = jnp.asarray(0.5 * (nodes + 1.0), jnp.result_type(float))
    w = jnp.asarray(0.5 * weights, jnp.result_type(float)) * 2.0 * u  # dt = 2u du
    values = jax.vmap(integrand_mean)(u**2)  # (num_nodes, 27)
    return jnp.sum(w[:, None] * values, axis=0)
