"""Guidance: steer a pretrained score toward a condition at sampling time.

Both return a new ``score_fn(x, t)`` that plugs into every sampler.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from probgen.diffusion.sde import ScoreFn


def classifier_guidance(score_fn: ScoreFn, classifier_log_prob: Callable, scale: float = 1.0) -> ScoreFn:
    """Classifier guidance (Dhariwal & Nichol 2021; Song et al. 2021, Sec. 5).

    ``score(x, t) + scale * grad_x log p_t(c | x)``. With ``scale = 1`` and the exact noisy
    classifier this is the score of the conditional ``p_t(x | c)``.

    Args:
      score_fn: unconditional ``score_fn(x, t)``.
      classifier_log_prob: ``classifier_log_prob(x, t) -> (num_particles,)`` log ``p_t(c | x)``,
        rows independent (the gradient of its sum is taken).
      scale: guidance strength.

    Returns:
      The guided ``score_fn(x, t)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> guided = pg.diffusion.classifier_guidance(lambda x, t: -x, lambda x, t: -jnp.sum((x - 1.0) ** 2, -1))
        >>> guided(jnp.zeros((2, 1)), 0.5).tolist()
        [[2.0], [2.0]]
    """

    def guided(x, t):
        grad = jax.grad(lambda y: jnp.sum(classifier_log_prob(y, t)))(x)
        return score_fn(x, t) + scale * grad

    return guided


def classifier_free_guidance(cond_score_fn: ScoreFn, uncond_score_fn: ScoreFn, scale: float = 1.0) -> ScoreFn:
    """Classifier-free guidance (Ho & Salimans 2022): ``s_u + scale (s_c - s_u)``.

    ``scale = 1`` is the conditional score, ``scale = 0`` the unconditional one, ``scale > 1``
    sharpens toward the condition.

    Args:
      cond_score_fn: conditional ``score_fn(x, t)`` (condition closed over).
      uncond_score_fn: unconditional ``score_fn(x, t)``.
      scale: guidance weight ``w``.

    Returns:
      The guided ``score_fn(x, t)``.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> s = pg.diffusion.classifier_free_guidance(lambda x, t: 1.0 - x, lambda x, t: -x, 2.0)
        >>> s(jnp.zeros((1, 1)), 0.1).tolist()
        [[2.0]]
    """

    def guided(x, t):
        s_u = uncond_score_fn(x, t)
        return s_u + scale * (cond_score_fn(x, t) - s_u)

    return guided
