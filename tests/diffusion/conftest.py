"""Shared ground-truth checks for the diffusion tests: moment checks and an MMD two-sample test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@jax.jit
def _mmd_pvalue(key, x, y):
    """Permutation p-value of the (biased, V-statistic) Gaussian-kernel MMD^2, median-heuristic bandwidth."""
    z = jnp.concatenate([x, y])
    n = x.shape[0]
    d2 = jnp.sum((z[:, None] - z[None]) ** 2, -1)
    kmat = jnp.exp(-d2 / jnp.median(d2))
    signs = jnp.concatenate([jnp.ones(n), -jnp.ones(n)]) / n
    perms = jax.vmap(lambda k: jax.random.permutation(k, signs))(jax.random.split(key, 300))
    null = jnp.sum(perms * (perms @ kmat), axis=1)
    observed = signs @ kmat @ signs
    return (1.0 + jnp.sum(null >= observed)) / (1.0 + null.shape[0])


def check_samples(samples, target, key, num_test=800, alpha=0.01, extra_tol=0.0):
    """Mean and covariance within 4 standard errors (plus ``extra_tol``) and an MMD test at level ``alpha``.

    Returns the MMD p-value. Raises AssertionError with details on failure.
    """
    samples = np.asarray(samples)
    n = samples.shape[0]
    ref = np.asarray(target.sample(jax.random.fold_in(key, 1), 20000))
    mean, cov = np.asarray(target.mean()), np.asarray(target.cov())
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(samples.mean(0) - mean) < 4 * se_mean + extra_tol), (samples.mean(0), mean, se_mean)
    centered = ref - mean
    outer = centered[:, :, None] * centered[:, None, :]
    se_cov = outer.std(0) / np.sqrt(n)
    emp_cov = np.cov(samples.T).reshape(cov.shape)
    assert np.all(np.abs(emp_cov - cov) < 4 * se_cov + extra_tol), (emp_cov, cov, se_cov)
    pvalue = float(_mmd_pvalue(jax.random.fold_in(key, 2), jnp.asarray(samples[:num_test]),
                               jnp.asarray(ref[:num_test])))
    assert pvalue > alpha, f"MMD two-sample test rejects (p = {pvalue:.4f})"
    return pvalue


def mmd_pvalue(samples, target, key, num_test=800):
    ref = target.sample(jax.random.fold_in(key, 1), num_test)
    return float(_mmd_pvalue(jax.random.fold_in(key, 2), jnp.asarray(samples[:num_test]), ref))


@pytest.fixture
def check():
    return check_samples


@pytest.fixture
def mmd():
    return mmd_pvalue
