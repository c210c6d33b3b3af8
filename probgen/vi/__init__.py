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

``pg.vi.autoguide(model, observations, *args, family=...)`` builds a variational family
over every continuous latent of a model (mean-field, full-rank, low-rank, a flow, or a
point for MAP) in unconstrained coordinates; ``pg.vi.laplace`` gives the Laplace
approximation as one (:mod:`probgen.vi.autoguide`).

Constrained latents in a hand-written guide: the guide must propose every value inside the
support of its model site. Draw a positive latent from a positive family (``pg.LogNormal``,
``pg.Gamma``) or push a Normal through a bijection,
``pg.dist.TransformedDistribution(pg.Normal(loc, scale), pg.dist.transforms.ExpTransform())``;
a latent on ``(0, 1)`` through ``SigmoidTransform()`` (or from ``pg.Beta``). ``log q`` then
carries the transform's Jacobian and the model scores the constrained value. A guide value
outside the model's support (a Normal guide for a HalfNormal scale) gives ``log p = -inf``,
and without checks the loss is NaN or infinite with nothing pointing at the site; under
``pg.validate`` the objective raises ``pg.ValidationError`` naming the address and support.

Example:
    >>> import jax, jax.numpy as jnp, probgen as pg
    >>> @pg.gen
    ... def model():
    ...     sigma = pg.sample("sigma", pg.HalfNormal(1.0))
    ...     pg.sample("y", pg.Normal(jnp.zeros(3), sigma))
    >>> @pg.gen
    ... def guide(p):
    ...     pg.sample("sigma", pg.LogNormal(p["loc"], jnp.exp(p["log_scale"])))   # sigma > 0
    >>> data = {"y": jnp.array([0.5, -1.0, 0.8])}
    >>> loss = jax.jit(lambda params, key: pg.vi.elbo(model, guide)(params, key, data))
    >>> bool(jnp.isfinite(loss({"guide": {"loc": 0.0, "log_scale": -1.0}}, jax.random.key(0))))
    True
    >>> @pg.gen
    ... def normal_guide(p):
    ...     pg.sample("sigma", pg.Normal(p["loc"], 1.0))   # may draw sigma < 0
    >>> checked = pg.validate(lambda params, key: pg.vi.elbo(model, normal_guide)(params, key, data))
    >>> try:
    ...     checked({"guide": {"loc": -3.0}}, jax.random.key(0))
    ... except pg.ValidationError as error:
    ...     print(error)
    sample site 'sigma': value ... is outside the support of HalfNormal (positive)
"""

from probgen.vi.autoguide import AutoGuide, autoguide, laplace
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
    "AutoGuide", "EstimatorError", "Expectation", "Marginal", "Objective", "PathBiasWarning", "SIR", "add_score_term",
    "autoguide", "cubo", "diwhvi", "elbo", "expectation", "forward_chi2", "hvi", "iwae", "iwhvi",
    "laplace", "log_weight", "marginal", "model_log_density", "renyi", "rws", "sir", "vimco", "vmap_program",
]
