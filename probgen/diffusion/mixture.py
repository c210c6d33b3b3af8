"""Gaussian mixtures whose noised densities and scores are exact at every diffusion time.

Under a linear SDE ``x_t = alpha(t) x_0 + sigma(t) eps``, a mixture
``sum_k w_k N(mu_k, S_k)`` stays a mixture: ``sum_k w_k N(alpha mu_k, alpha^2 S_k + sigma^2 I)``.
That makes mixtures the ground truth for testing samplers, likelihoods and Feynman–Kac
correctors, and a handy toy target in notebooks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from probgen.core.errors import SettingError
from probgen.diffusion.sde import SDE


class GaussianMixture(NamedTuple):
    """A finite Gaussian mixture in ``D`` dimensions (a pytree).

    Attributes:
      log_weights: ``(K,)`` normalized log mixture weights.
      means: ``(K, D)``.
      covs: ``(K, D, D)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> gmm = pg.diffusion.gaussian_mixture([0.5, 0.5], [[-1.0], [1.0]], 0.5)
        >>> gmm.sample(jax.random.key(0), 3).shape
        (3, 1)
    """

    log_weights: jax.Array
    means: jax.Array
    covs: jax.Array

    @property
    def dim(self) -> int:
        """The event dimension ``D``."""
        return self.means.shape[-1]

    def _terms(self, x: jax.Array):
        """Per-component log joint ``log w_k + log N_k(x)`` and ``S_k^{-1}(x - mu_k)``."""
        if x.shape[-1] != self.dim:
            raise SettingError(f"GaussianMixture: x has trailing dim {x.shape[-1]}, expected {self.dim}")
        precision = jnp.linalg.inv(self.covs)
        _, logdet = jnp.linalg.slogdet(self.covs)
        diff = x[..., None, :] - self.means
        prec_diff = jnp.einsum("kij,...kj->...ki", precision, diff)
        maha = jnp.sum(diff * prec_diff, axis=-1)
        log_joint = self.log_weights - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return log_joint, prec_diff

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density at points ``x`` of shape ``(..., D)``; returns shape ``(...)``."""
        log_joint, _ = self._terms(x)
        return logsumexp(log_joint, axis=-1)

    def score(self, x: jax.Array) -> jax.Array:
        """Exact ``grad_x log p(x)`` at points ``(..., D)``."""
        log_joint, prec_diff = self._terms(x)
        resp = jax.nn.softmax(log_joint, axis=-1)
        return -jnp.sum(resp[..., None] * prec_diff, axis=-2)

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``num_samples`` i.i.d. draws, shape ``(num_samples, D)``."""
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=(num_samples,))
        chol = jnp.linalg.cholesky(self.covs)
        z = jax.random.normal(k_noise, (num_samples, self.dim), self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z)

    def mean(self) -> jax.Array:
        """Mixture mean ``(D,)``."""
        return jnp.exp(self.log_weights) @ self.means

    def cov(self) -> jax.Array:
        """Mixture covariance ``(D, D)``."""
        w = jnp.exp(self.log_weights)
        centered = self.means - self.mean()
        return jnp.einsum("k,kij->ij", w, self.covs) + jnp.einsum("k,ki,kj->ij", w, centered, centered)

    def noised(self, sde: SDE, t) -> "GaussianMixture":
        """The exact marginal ``p_t`` of this mixture pushed through ``sde`` to time ``t``."""
        a, s = sde.alpha(t), sde.sigma(t)
        eye = jnp.eye(self.dim, dtype=self.covs.dtype)
        return GaussianMixture(self.log_weights, a * self.means, a**2 * self.covs + s**2 * eye)


def gaussian_mixture(weights, means, covs) -> GaussianMixture:
    """Build a :class:`GaussianMixture` from weights, means and covariances or stds.

    Args:
      weights: ``(K,)`` nonnegative, normalized here.
      means: ``(K, D)``.
      covs: ``(K, D, D)`` covariances, or a scalar / ``(K,)`` standard deviations
        giving isotropic components.

    Returns:
      A :class:`GaussianMixture`.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> gmm = pg.diffusion.gaussian_mixture([1.0, 3.0], [[0.0, 0.0], [2.0, 2.0]], [1.0, 0.5])
        >>> gmm.mean().tolist()
        [1.5, 1.5]
    """
    weights, means, covs = jnp.asarray(weights), jnp.asarray(means), jnp.asarray(covs)
    # The caller's floating dtype (float64 lists under x64), never a fixed float32.
    dtype = jnp.result_type(weights, means, covs, float)
    weights, means, covs = weights.astype(dtype), means.astype(dtype), covs.astype(dtype)
    if weights.ndim != 1:
        raise SettingError(f"gaussian_mixture: weights must have shape (K,), got {weights.shape}")
    if means.ndim != 2 or means.shape[0] != weights.shape[0]:
        raise SettingError(
            f"gaussian_mixture: means must have shape (K, D) = ({weights.shape[0]}, D), got {means.shape}")
    k, d = means.shape
    if covs.ndim <= 1:
        stds = jnp.broadcast_to(covs, (k,))
        covs = stds[:, None, None] ** 2 * jnp.eye(d, dtype=dtype)
    if covs.shape != (k, d, d):
        raise SettingError(f"gaussian_mixture: covs must have shape {(k, d, d)} or be stds, got {covs.shape}")
    return GaussianMixture(jnp.log(weights / jnp.sum(weights)), means, covs)


def gmm_score(gmm: GaussianMixture, sde: SDE):
    """The exact noised score ``score_fn(x, t) = grad log p_t(x)`` of ``gmm`` under ``sde``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> gmm = pg.diffusion.gaussian_mixture([1.0], [[0.0]], 2.0)
        >>> score = pg.diffusion.gmm_score(gmm, pg.diffusion.ve())
        >>> score(jnp.ones((4, 1)), 0.0).shape
        (4, 1)
    """
    return lambda x, t: gmm.noised(sde, t).score(x)


def gmm_log_prob(gmm: GaussianMixture, sde: SDE):
    """The exact noised log density ``log_prob_fn(x, t) = log p_t(x)`` of ``gmm`` under ``sde``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> gmm = pg.diffusion.gaussian_mixture([1.0], [[0.0]], 1.0)
        >>> lp = pg.diffusion.gmm_log_prob(gmm, pg.diffusion.vp())
        >>> round(float(lp(jnp.zeros((1, 1)), 0.3)[0]), 4)
        -0.9189
    """
    return lambda x, t: gmm.noised(sde, t).log_prob(x)


def mixture_product(a: GaussianMixture, b: GaussianMixture) -> GaussianMixture:
    """The normalized product density ``a(x) b(x) / Z``: a mixture of ``K_a K_b`` Gaussians.

    ``N(m1, S1) N(m2, S2) = N(m1; m2, S1 + S2) N(m, S)`` with ``S = (S1^-1 + S2^-1)^-1`` and
    ``m = S (S1^-1 m1 + S2^-1 m2)``. ``mixture_product(p, p)`` is the exactly tempered ``p^2``.

    Example:
        >>> import probgen as pg
        >>> g = pg.diffusion.gaussian_mixture([1.0], [[0.0]], 1.0)
        >>> float(pg.diffusion.mixture_product(g, g).covs[0, 0, 0])
        0.5
    """
    if a.dim != b.dim:
        raise SettingError(f"mixture_product: dimensions differ ({a.dim} vs {b.dim})")
    pa, pb = jnp.linalg.inv(a.covs), jnp.linalg.inv(b.covs)
    prec = pa[:, None] + pb[None, :]
    cov = jnp.linalg.inv(prec)
    lin = jnp.einsum("kij,kj->ki", pa, a.means)[:, None] + jnp.einsum("kij,kj->ki", pb, b.means)[None, :]
    mean = jnp.einsum("abij,abj->abi", cov, lin)
    # Normalizer of each pair: N(m_a; m_b, S_a + S_b).
    scov = a.covs[:, None] + b.covs[None, :]
    diff = a.means[:, None] - b.means[None, :]
    _, logdet = jnp.linalg.slogdet(scov)
    maha = jnp.einsum("abi,abij,abj->ab", diff, jnp.linalg.inv(scov), diff)
    log_z = -0.5 * (maha + logdet + a.dim * math.log(2 * math.pi))
    log_w = a.log_weights[:, None] + b.log_weights[None, :] + log_z
    log_w = (log_w - logsumexp(log_w)).reshape(-1)
    return GaussianMixture(log_w, mean.reshape(-1, a.dim), cov.reshape(-1, a.dim, a.dim))
