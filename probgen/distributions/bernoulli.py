"""``pg.Bernoulli``: numpyro's Bernoulli with a cheaper log-mass for the logits form.

numpyro's ``BernoulliLogits.log_prob`` guards infinite logits with two ``where`` passes;
in a likelihood evaluated inside HMC or a VAE decoder those extra elementwise passes (and
their gradients) cost about 20% of a logistic-regression leapfrog step. ``pg.Bernoulli``
computes ``k·α - softplus(α)`` instead: exact and stable for every finite logit and for
soft labels ``k ∈ [0, 1]``; an infinite logit gives NaN (as TensorFlow's
``sigmoid_cross_entropy_with_logits`` does), so write a deterministic outcome with
``probs=0.0`` / ``probs=1.0``. Everything else (sampling, enumeration, MVD, the class
names strategies look up) is numpyro's.
"""

from __future__ import annotations

import jax
import numpyro.distributions as dist
from numpyro.distributions.util import validate_sample
from probgen.core.errors import SettingError


class BernoulliLogits(dist.BernoulliLogits):
    """numpyro's ``BernoulliLogits`` with log-mass ``k·α - softplus(α)``.

    Example:
        >>> import probgen as pg
        >>> round(float(pg.Bernoulli(logits=0.0).log_prob(1.0)), 4)
        -0.6931
    """

    @validate_sample
    def log_prob(self, value):
        return value * self.logits - jax.nn.softplus(self.logits)


def Bernoulli(probs=None, logits=None, *, validate_args=None):  # noqa: N802 (a distribution name)
    """A Bernoulli distribution from ``probs`` or ``logits`` (exactly one).

    ``probs`` gives numpyro's ``BernoulliProbs``; ``logits`` gives :class:`BernoulliLogits`,
    whose log-mass is NaN for infinite logits (use ``probs`` for a certain outcome).

    Example:
        >>> import jax, probgen as pg
        >>> pg.Bernoulli(probs=0.3).sample(jax.random.key(0), (4,)).shape
        (4,)
        >>> round(float(pg.Bernoulli(logits=2.0).log_prob(0.0)), 4)
        -2.1269
    """
    if (probs is None) == (logits is None):
        raise SettingError("Bernoulli: give exactly one of probs= or logits=")
    if probs is not None:
        return dist.BernoulliProbs(probs, validate_args=validate_args)
    return BernoulliLogits(logits, validate_args=validate_args)
