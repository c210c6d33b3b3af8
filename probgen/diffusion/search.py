"""Inference-time search over initial noise with a user verifier (Ma et al. 2025,
"Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps").

``decode_fn(noise) -> samples`` maps a batch of initial noises to samples (typically a
deterministic sampler such as DDIM or the probability-flow ODE run from ``x_T = noise``);
``verifier(samples) -> (batch,)`` scores them, higher is better. A NaN score (a verifier
that failed on a sample) ranks below every other score, ``-inf`` included: it is never
chosen while any candidate has a non-NaN score.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.errors import SettingError
from probgen.core.validation import check
from probgen.kernels import Kernel, run


def _best_index(scores: jax.Array) -> jax.Array:
    """Index of the highest score with NaN ranked below everything (``-inf`` included).

    Ties go to the first index; when every score is NaN the index is 0.
    """
    is_nan = jnp.isnan(scores)
    best = jnp.argmax(jnp.where(is_nan, -jnp.inf, scores))
    # All real scores are -inf: argmax may have landed on a NaN placeholder; take the first real one.
    return jnp.where(is_nan[best], jnp.argmax(~is_nan), best)


class SearchResult(NamedTuple):
    """Best sample found, its noise and score, and the scores of every candidate evaluated."""

    sample: jax.Array
    noise: jax.Array
    score: jax.Array
    scores: jax.Array


def best_of_n(key: jax.Array, decode_fn: Callable, verifier: Callable, noise_shape, num_candidates: int,
              noise_std: float = 1.0) -> SearchResult:
    """Random search: decode ``num_candidates`` Gaussian noises, keep the one the verifier likes best.

    Args:
      key: PRNG key.
      decode_fn: ``decode_fn(noise)`` with noise of shape ``(num_candidates, *noise_shape)``.
      verifier: ``verifier(samples) -> (num_candidates,)``.
      noise_shape: event shape of one noise.
      num_candidates: ``N``.
      noise_std: prior std of the noise.

    Returns:
      :class:`SearchResult` with ``scores`` of shape ``(N,)`` (as the verifier returned them).
      NaN scores rank last; if every score is NaN the first candidate is returned with
      score NaN (under ``pg.validate`` that raises a ``pg.ValidationError`` instead).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> r = pg.diffusion.best_of_n(jax.random.key(0), lambda z: z, lambda x: x[:, 0], (1,), 16)
        >>> bool(r.score == r.scores.max())
        True
    """
    num_candidates = static_int(num_candidates, "num_candidates", "best_of_n")
    noise = noise_std * jax.random.normal(key, (num_candidates,) + tuple(noise_shape))
    samples = decode_fn(noise)
    scores = verifier(samples)
    if scores.shape != (num_candidates,):
        raise SettingError(f"best_of_n: verifier must return shape ({num_candidates},), got {scores.shape}")
    check(~jnp.all(jnp.isnan(scores)),
          "best_of_n: verifier returned NaN for all {n} candidates", n=jnp.asarray(num_candidates))
    best = _best_index(scores)
    return SearchResult(samples[best], noise[best], scores[best], scores)


class SearchState(NamedTuple):
    """The pivot noise, its decoded sample and verifier score."""

    noise: jax.Array
    sample: jax.Array
    score: jax.Array


def zero_order_search(decode_fn: Callable, verifier: Callable, num_neighbors: int, radius: float) -> Kernel:
    """Zero-order local search over noise as a :class:`probgen.Kernel` (Ma et al. 2025, Sec. 3.1).

    Each step draws ``num_neighbors`` noises ``pivot + radius * z`` rescaled to the pivot's
    norm (so they stay typical for the Gaussian prior), decodes and verifies them, and moves the
    pivot to the best neighbor if it beats the pivot. The verifier score never decreases.
    NaN scores rank last: a NaN neighbor never replaces the pivot nor hides a better one,
    and a pivot whose score is NaN is replaced by any neighbor with a real score.

    Args:
      decode_fn: ``decode_fn(noise_batch) -> sample_batch``.
      verifier: ``verifier(sample_batch) -> (batch,)``.
      num_neighbors: candidates per step.
      radius: neighborhood size relative to a unit-variance noise.

    Returns:
      A kernel with ``init(noise) -> SearchState`` (``noise`` of the event shape) and
      ``step(key, state) -> (state, best_neighbor_score)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> k = pg.diffusion.zero_order_search(lambda z: z, lambda x: -jnp.sum((x - 1.0) ** 2, -1), 8, 0.5)
        >>> s, _ = pg.run(k, jax.random.key(0), k.init(jnp.zeros(2)), 20)
        >>> float(s.score) > -2.0
        True
    """
    num_neighbors = static_int(num_neighbors, "num_neighbors", "zero_order_search")
    if not radius > 0:
        raise SettingError(f"zero_order_search: radius must be positive, got {radius!r}")

    def evaluate(noise_batch):
        samples = decode_fn(noise_batch)
        return samples, verifier(samples)

    def init(noise):
        noise = jnp.asarray(noise)
        samples, scores = evaluate(noise[None])
        return SearchState(noise, samples[0], scores[0])

    def step(key, state):
        z = jax.random.normal(key, (num_neighbors,) + state.noise.shape, state.noise.dtype)
        cand = state.noise + radius * z
        axes = tuple(range(1, cand.ndim))
        pivot_norm = jnp.sqrt(jnp.sum(state.noise**2))
        cand_norm = jnp.sqrt(jnp.sum(cand**2, axis=axes, keepdims=True))
        cand = jnp.where(pivot_norm > 0, cand * pivot_norm / jnp.maximum(cand_norm, 1e-12), cand)
        samples, scores = evaluate(cand)
        best = _best_index(scores)
        better = ~jnp.isnan(scores[best]) & (jnp.isnan(state.score) | (scores[best] > state.score))
        new = SearchState(
            jnp.where(better, cand[best], state.noise),
            jnp.where(better, samples[best], state.sample),
            jnp.where(better, scores[best], state.score),
        )
        return new, scores[best]

    return Kernel(init=init, step=step)


def local_search(key: jax.Array, decode_fn: Callable, verifier: Callable, noise: jax.Array, num_steps: int,
                 num_neighbors: int = 8, radius: float = 0.5) -> SearchResult:
    """Run :func:`zero_order_search` for ``num_steps`` from ``noise``.

    Returns:
      :class:`SearchResult` with ``scores`` the best neighbor score at each step.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> r = pg.diffusion.local_search(jax.random.key(0), lambda z: z, lambda x: x[:, 0], jnp.ones(2), 5)
        >>> r.scores.shape
        (5,)
    """
    kernel = zero_order_search(decode_fn, verifier, num_neighbors, radius)
    final, (_, step_scores) = run(kernel, key, kernel.init(noise), num_steps, keep="all")
    return SearchResult(final.sample, final.noise, final.score, step_scores)
