"""probgen.vi: programmable variational inference.

``pg.vi.expectation(program)`` turns a stochastic program over generative functions into
unbiased value and gradient estimators, each sample site following its gradient strategy
(REPARAM, REINFORCE, ENUM, MVD, IMPLICIT, PATH). ``pg.vi.marginal`` / ``pg.vi.normalize``
give density estimates by inner importance sampling. The objective library (``elbo``,
``iwae``, ``vimco``, ``hvi``, ``iwhvi``, ``diwhvi``, ``rws``, ``cubo``, ``renyi``,
``forward_chi2``) is written on the public API; every ``loss`` is minimized.
"""

from probgen.vi.estimator import (
    EstimatorError,
    Expectation,
    add_score_term,
    expectation,
    vmap,
)
from probgen.vi.marginal import Marginal, Normalized, marginal, normalize
from probgen.vi.objectives import (
    Objective,
    PathBiasWarning,
    cubo,
    diwhvi,
    elbo,
    forward_chi2,
    hvi,
    iwae,
    iwhvi,
    log_weight,
    model_log_density,
    renyi,
    rws,
    vimco,
)

__all__ = [
    "EstimatorError", "Expectation", "Marginal", "Normalized", "Objective", "PathBiasWarning", "add_score_term",
    "cubo", "diwhvi", "elbo", "expectation", "forward_chi2", "hvi", "iwae", "iwhvi",
    "log_weight", "marginal", "model_log_density", "normalize", "renyi", "rws", "vimco", "vmap",
]
