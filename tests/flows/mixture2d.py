"""The 2-D two-component Gaussian mixture shared by the flow tests, and a 2-D KS test."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

WEIGHTS = jnp.array([0.3, 0.7])
MEANS = jnp.array([[-2.0, 1.0], [1.5, -0.5]])
STDS = jnp.array([0.5, 0.8])


def mixture_log_prob(x):
    comp = jax.scipy.stats.norm.logpdf(x[None, :], MEANS, STDS[:, None]).sum(-1)
    return jax.nn.logsumexp(comp + jnp.log(WEIGHTS))


def mixture_samples(key, n):
    kc, kz = jax.random.split(key)
    c = jax.random.choice(kc, 2, (n,), p=WEIGHTS)
    return MEANS[c] + STDS[c][:, None] * jax.random.normal(kz, (n, 2))


def projected_ks(a, b, num_dirs=4):
    """Smallest p-value (Bonferroni-corrected) of KS tests along fixed directions."""
    angles = np.linspace(0, np.pi, num_dirs, endpoint=False)
    dirs = np.stack([np.cos(angles), np.sin(angles)], 1)
    ps = [scipy.stats.ks_2samp(np.asarray(a) @ d, np.asarray(b) @ d).pvalue for d in dirs]
    return min(1.0, min(ps) * num_dirs)
