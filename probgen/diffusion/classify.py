"""Zero-shot classification with a class-conditional diffusion model (Li, Prabhudesai, Duggal, Brown &
Pathak 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier").

Bayes' rule with the ELBO in place of the intractable ``log p(x | c)``:
``log p(c | x) ~ log p(c) + ELBO_c(x) - logsumexp_c'(log p(c') + ELBO_c'(x))``. Every class is
scored with the same noise draws (the same key), so the Monte Carlo errors of the class
ELBOs are strongly correlated and largely cancel in their differences, which is all the
posterior depends on (the paper's variance reduction). With exact class-conditional denoisers
and a tight bound (e.g. :func:`probgen.diffusion.vdm_elbo` with wide endpoints) the decisions
are those of the Bayes classifier.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError


class ClassifierScores(NamedTuple):
    """Zero-shot class posterior of each example.

    Attributes:
      log_posterior: ``(B, C)`` normalized log class probabilities.
      label: ``(B,)`` the most probable class.
    """

    log_posterior: jax.Array
    label: jax.Array


def diffusion_classify(key: jax.Array, class_elbo_fn: Callable, x: jax.Array, num_classes: int,
                       log_prior: jax.Array | None = None) -> ClassifierScores:
    """Classify ``x`` by the class-conditional ELBOs of a diffusion model, with shared noise.

    Args:
      key: PRNG key, passed unchanged to every class (shared noise).
      class_elbo_fn: ``class_elbo_fn(key, x, c) -> (B,)`` a lower bound on ``log p(x | c)`` for the
        class index ``c`` (a traced int scalar: the classes are ``jax.vmap``-ed), batched over the
        examples; its noise must depend on ``key`` and ``x``'s shape only (as in
        :func:`probgen.diffusion.vdm_elbo`), so every class sees the same draws.
      x: examples ``(B, *event)``.
      num_classes: ``C``.
      log_prior: ``(C,)`` log class probabilities (default uniform; need not be normalized).

    Returns:
      :class:`ClassifierScores` with the ``(B, C)`` log posterior and the ``(B,)`` labels.

    Raises:
      SettingError: a bad ``num_classes``, a ``log_prior`` not of shape ``(C,)``, or
        ``class_elbo_fn`` not returning shape ``(B,)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> means = jnp.array([-2.0, 2.0])  # class c: x ~ N(means[c], 1), scored exactly here
        >>> elbo = lambda key, x, c: -0.5 * jnp.sum((x - means[c]) ** 2, -1)
        >>> pg.diffusion.diffusion_classify(jax.random.key(0), elbo, jnp.array([[-1.0], [0.5]]), 2).label.tolist()
        [0, 1]
    """
    num_classes = static_int(num_classes, "num_classes", "diffusion_classify")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise SettingError(f"diffusion_classify: x must have shape (B, *event_shape), got {x.shape}")
    elbos = jax.vmap(lambda c: class_elbo_fn(key, x, c))(jnp.arange(num_classes))
    if elbos.shape != (num_classes, x.shape[0]):
        raise SettingError(f"diffusion_classify: class_elbo_fn(key, x, c) must return shape ({x.shape[0]},) "
                           f"(one ELBO per example), got {elbos.shape[1:]}")
    scores = elbos.T
    if log_prior is not None:
        log_prior = jnp.asarray(log_prior)
        if log_prior.shape != (num_classes,):
            raise SettingError(f"diffusion_classify: log_prior must have shape ({num_classes},), "
                               f"got {log_prior.shape}")
        scores = scores + log_prior
    log_posterior = jax.nn.log_softmax(scores, axis=-1)
    return ClassifierScores(log_posterior, jnp.argmax(log_posterior, axis=-1))
