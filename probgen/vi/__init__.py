"""probgen.vi: programmable variational inference.

Every objective of the library (``elbo``, ``iwae``, ``vimco``, ``hvi``, ``iwhvi``,
``diwhvi``, ``rws``, ``cubo``, ``renyi``, ``forward_chi2``) is a training loss called as
``objective(params, key, batch)``, with ``params = {"model": ..., "guide": ...}`` (each
entry optional) and ``batch`` the observations or ``(observations, *args)``: pass it to
``pg.fit`` / ``pg.sweep`` / ``jax.grad`` as it is. ``objective.loss`` and
``objective.estimate`` take the GF arguments explicitly (see :mod:`probgen.vi.objectives`).

``pg.vi.expectation(program)`` turns a stochastic program over generative functions into
unbiased value and gradient estimators, each sample site following its gradient strategy
(REPARAM, REINFORCE, ENUM, MVD, IMPLICIT, PATH); ``pg.vi.vmap_program`` batches particles
inside such a program. ``pg.vi.marginal`` and ``pg.vi.sir`` (sampling importance
resampling) are generative functions with densities estimated by inner importance
sampling. The library is written on this public API.
"""

from probgen.vi.estimator import (
    EstimatorError,
    Expectation,
    add_score_term,
    expectation,
    vmap_program,
)
from probgen.vi.marginal import SIR, Marginal, marginal, sir
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
    "EstimatorError", "Expectation", "Marginal", "Objective", "PathBiasWarning", "SIR", "add_score_term",
    "cubo", "diwhvi", "elbo", "expectation", "forward_chi2", "hvi", "iwae", "iwhvi",
    "log_weight", "marginal", "model_log_density", "renyi", "rws", "sir", "vimco", "vmap_program",
]
