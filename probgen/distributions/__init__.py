"""Primitive random choices: one protocol over numpyro, distrax and user distributions.

The common families are re-exported from ``numpyro.distributions`` (``pg.Normal``,
``pg.Gamma``, ...; ``pg.Bernoulli`` is numpyro's with a cheaper logits log-mass, see
``probgen.distributions.bernoulli``); the whole numpyro catalogue is ``pg.dist``;
distrax distributions work at a sample site as they are.
"""

import numpyro.distributions as dist  # the full catalogue: pg.dist.<Family>
from numpyro.distributions import (
    Beta,
    Binomial,
    Categorical,
    Cauchy,
    Delta,
    Dirichlet,
    Exponential,
    Gamma,
    Geometric,
    HalfNormal,
    Laplace,
    LogNormal,
    MultivariateNormal,
    Normal,
    Poisson,
    StudentT,
    Uniform,
)

from probgen.distributions.bernoulli import Bernoulli, BernoulliLogits
from probgen.distributions.protocol import (
    Distribution,
    WithStrategy,
    default_strategy,
    with_strategy,
)
from probgen.distributions.strategies import (
    ENUM,
    IMPLICIT,
    MVD,
    PATH,
    REINFORCE,
    REPARAM,
    Strategy,
)

__all__ = [
    "Bernoulli", "BernoulliLogits", "Beta", "Binomial", "Categorical", "Cauchy", "Delta", "Dirichlet",
    "Distribution", "ENUM", "Exponential", "Gamma", "Geometric", "HalfNormal", "IMPLICIT", "Laplace",
    "LogNormal", "MVD", "MultivariateNormal", "Normal", "PATH", "Poisson", "REINFORCE", "REPARAM",
    "Strategy", "StudentT", "Uniform", "WithStrategy", "default_strategy", "dist", "with_strategy",
]
