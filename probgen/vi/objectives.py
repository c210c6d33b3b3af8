"""The objective library, each written with the public ``expectation`` API.

Every constructor returns an :class:`Objective` with

* ``loss(key, observations, model_args, guide_args)`` — a scalar to **minimize** (with
  optax): ``-bound`` for lower bounds (ELBO, IWAE, VIMCO, HVI family, Rényi), the
  exponentiated bound ``E[(p/q)^n]`` for CUBO (an upper bound: minimizing it tightens it),
  and a surrogate for the self-normalized schemes (RWS, forward χ²);
  ``jax.grad(loss, argnums=(2, 3))`` gives (model, guide) parameter gradients.
* ``estimate(key, observations, model_args, guide_args)`` — the bound's value (an
  estimate; for CUBO the bound ``(1/n) log E[(p/q)^n]`` itself).

``model_args``/``guide_args`` are tuples passed as ``*args`` to the GFs (parameters live
there). The guide's choices plus the observations must give every model choice: the model
density is taken with ``model.generate(key, choices, ...)`` (so models built with
``pg.vi.marginal`` work) and a model choice left unconstrained is an error.

A new objective is a few lines: write ``program(key, observations, model_args,
guide_args) -> number`` with GF calls and wrap it with ``pg.vi.expectation``; see
:func:`elbo` for the pattern.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core import handlers
from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address
from probgen.core.errors import SettingError
from probgen.distributions.strategies import PATH
from probgen.core.gfi import GenerativeFunction
from probgen.vi.estimator import EstimatorError, add_score_term, expectation, vmap
from probgen.vi.marginal import marginal

sg = jax.lax.stop_gradient


class Objective(NamedTuple):
    """A variational objective: ``loss`` to minimize and ``estimate`` of the bound.

    Both take ``(key, observations, model_args, guide_args)``.
    """

    loss: Callable[..., jax.Array]
    estimate: Callable[..., jax.Array]


def model_log_density(model: GenerativeFunction, key, choices: ChoiceMap, model_args: tuple) -> jax.Array:
    """``log p(choices)`` for a model whose every choice is given (works for marginal models).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     pg.sample("z", pg.Normal(0.0, 1.0))
        >>> round(float(pg.vi.model_log_density(model, jax.random.key(0), pg.ChoiceMap({"z": 0.0}), ())), 4)
        -0.9189
    """
    trace, log_weight = model.generate(key, choices, *model_args)
    missing = [a for a in trace.choices.addresses() if a not in choices]
    if missing:
        names = ", ".join(repr(format_address(a)) for a in missing)
        raise EstimatorError(
            f"model {model.__name__} has choice(s) {names} that neither the guide nor the "
            "observations provide; the guide must propose every latent address"
        )
    return log_weight


def log_weight(model, guide, key, observations, model_args, guide_args):
    """One importance weight ``log p(x, z) - log q(z)`` with ``z ~ guide``; returns (log_w, guide_trace)."""
    k_guide, k_model = jax.random.split(key)
    trace = guide.simulate(k_guide, *guide_args)
    observations = as_choicemap(observations)
    _check_not_observed(guide, trace.choices, observations)
    log_p = model_log_density(model, k_model, trace.choices.merge(observations), model_args)
    return log_p - trace.score, trace


def _check_not_observed(guide, choices: ChoiceMap, observations: ChoiceMap) -> None:
    """A guide proposes latent choices only: an observed address in its trace is an error."""
    clash = [a for a in choices.addresses() if a in observations]
    if clash:
        names = ", ".join(repr(format_address(a)) for a in clash)
        raise EstimatorError(
            f"guide {guide.__name__} proposes the observed address(es) {names}; the observation "
            "would silently replace its draw while its density stays in log q. A guide proposes "
            "latent choices only"
        )


def _objective(program: Callable, sign: float = -1.0) -> Objective:
    est = expectation(program)

    def loss(key, observations, model_args, guide_args):
        return sign * est.estimate(key, observations, tuple(model_args), tuple(guide_args))

    def estimate(key, observations, model_args, guide_args):
        return sg(est.estimate(key, observations, tuple(model_args), tuple(guide_args)))

    return Objective(loss, estimate)


def _check_particles(name: str, num_particles: int, least: int = 1) -> int:
    return static_int(num_particles, "num_particles", name, least)


class _PathSites(handlers.Interceptor):
    """Interceptor that records the guide's PATH sites while its shape is traced."""

    def __init__(self):
        self.addresses: list = []

    def draw(self, site, key):
        if site.strategy is PATH:
            self.addresses.append(site.address)
        return None


def _warn_path_bias(name: str, guide, key, guide_args) -> None:
    """PATH (sticking the landing) in a multi-sample bound gives a biased gradient: say so."""
    recorder = _PathSites()
    with handlers.handle(recorder):
        jax.eval_shape(lambda k, a: guide.simulate(k, *a).score, key, tuple(guide_args))
    if recorder.addresses:
        names = ", ".join(repr(format_address(a)) for a in recorder.addresses)
        warnings.warn(
            f"{name}: guide site(s) {names} use pg.PATH; in a multi-sample bound this is the "
            "sticking-the-landing estimator, whose gradient is biased (Tucker et al. 2018); use "
            "pg.REPARAM for an unbiased gradient",
            PathBiasWarning, stacklevel=3,
        )


class PathBiasWarning(UserWarning):
    """A PATH (sticking-the-landing) site in iwae / vimco / renyi / cubo: a biased gradient."""


def _log_weights(model, guide, num_particles, key, observations, model_args, guide_args, return_score=False,
                 name=None):
    if name is not None:
        _warn_path_bias(name, guide, key, guide_args)

    def one(k):
        return log_weight(model, guide, k, observations, model_args, guide_args)[0]

    return vmap(one, return_score=return_score)(jax.random.split(key, num_particles))


def _log_mean_exp(x, axis=0):
    return jax.nn.logsumexp(x, axis=axis) - math.log(x.shape[axis])


def elbo(model: GenerativeFunction, guide: GenerativeFunction, *, beta: float = 1.0,
         num_particles: int = 1) -> Objective:
    """The evidence lower bound ``E_q[log p(x, z) - log q(z)]``; β-weighted when ``beta != 1``.

    With ``beta``: ``E_q[log p(x | z)] + β E_q[log p(z) - log q(z)]`` (Higgins et al. 2017),
    where ``log p(z)`` is the model density of the guide's choices alone (one more model run,
    whose drawn observation sites add no gradient terms).

    Args:
      model, guide: generative functions; the guide proposes every latent model address.
      beta: weight of the KL term.
      num_particles: average the estimate over this many independent guide draws (vmapped);
        same expectation, variance divided by ``num_particles``. Unlike ``iwae``, the bound
        does not tighten with more particles.

    Returns:
      An :class:`Objective`; ``loss = -ELBO``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(mu):
        ...     pg.sample("z", pg.Normal(mu, 1.0))
        >>> obj = pg.vi.elbo(model, guide)
        >>> grads = jax.grad(obj.loss, argnums=3)(jax.random.key(0), {"x": 1.0}, (), (0.0,))
        >>> len(grads)
        1
        >>> pg.vi.elbo(model, guide, num_particles=8).estimate(jax.random.key(0), {"x": 1.0}, (), (0.0,)).shape
        ()
    """
    num_particles = _check_particles("elbo", num_particles)

    def one(key, observations, model_args, guide_args):
        log_w, trace = log_weight(model, guide, key, observations, model_args, guide_args)
        if beta == 1.0:
            return log_w
        # log p(z): the model with only the guide's choices constrained. The observation
        # sites are drawn and ignored; return_score=True keeps their score-function terms
        # (pure noise here) out of the estimator.
        def prior(k):
            return model.generate(k, trace.choices, *model_args)[1]

        log_prior, _ = vmap(prior, return_score=True)(jax.random.split(jax.random.fold_in(key, 1), 1))
        log_prior = log_prior[0]
        log_lik = log_w + trace.score - log_prior
        return log_lik + beta * (log_prior - trace.score)

    if num_particles == 1:
        return _objective(one)

    def program(key, observations, model_args, guide_args):
        keys = jax.random.split(key, num_particles)
        values, log_q = vmap(lambda k: one(k, observations, model_args, guide_args), return_score=True)(keys)
        # Each particle's score-function sites learn from its own ELBO term, not the mean.
        add_score_term(log_q, values / num_particles)
        return jnp.mean(values)

    return _objective(program)


def iwae(model: GenerativeFunction, guide: GenerativeFunction, num_particles: int) -> Objective:
    """The importance-weighted bound ``E[log (1/K) Σ_k p(x, z_k)/q(z_k)]`` (Burda et al. 2016).

    Args:
      model, guide: generative functions.
      num_particles: ``K``, vmapped.

    Returns:
      An :class:`Objective`; ``loss = -IWAE``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide():
        ...     pg.sample("z", pg.Normal(0.0, 1.0))
        >>> bound = pg.vi.iwae(model, guide, 8).estimate(jax.random.key(0), {"x": 1.0}, (), ())
        >>> bound.shape
        ()
    """
    num_particles = _check_particles("iwae", num_particles)

    def program(key, observations, model_args, guide_args):
        return _log_mean_exp(_log_weights(model, guide, num_particles, key, observations, model_args, guide_args,
                                          name="iwae"))

    return _objective(program)


def vimco(model: GenerativeFunction, guide: GenerativeFunction, num_particles: int) -> Objective:
    """IWAE with VIMCO's leave-one-out control variates for score-function sites (Mnih & Rezende 2016).

    Particle ``k``'s learning signal is the bound minus the bound with ``log w_k``
    replaced by the mean of the other log-weights.

    Returns:
      An :class:`Objective`; ``loss = -IWAE``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     b = pg.sample("b", pg.Bernoulli(probs=0.3))
        ...     pg.sample("x", pg.Normal(2.0 * b, 1.0))
        >>> @pg.gen
        ... def guide(p):
        ...     pg.sample("b", pg.Bernoulli(probs=p))
        >>> g = jax.grad(pg.vi.vimco(model, guide, 4).loss, argnums=3)(jax.random.key(0), {"x": 1.0}, (), (0.5,))
        >>> g[0].shape
        ()
    """
    num_particles = _check_particles("vimco", num_particles, 2)

    def program(key, observations, model_args, guide_args):
        log_w, log_q = _log_weights(model, guide, num_particles, key, observations, model_args, guide_args, True,
                                    name="vimco")
        bound = _log_mean_exp(log_w)
        eye = jnp.eye(num_particles, dtype=bool)
        # Mean of the other log-weights, summed without subtracting (no -inf - -inf = NaN).
        others = jnp.sum(jnp.where(eye, 0.0, log_w[None, :]), axis=1) / (num_particles - 1)
        replaced = jnp.where(eye, others[:, None], log_w[None, :])
        leave_one_out = _log_mean_exp(replaced, axis=1)
        # Where every other particle has weight 0 the leave-one-out bound is -inf; a
        # baseline may be any function of the others, so fall back to 0 there.
        leave_one_out = jnp.where(jnp.isfinite(leave_one_out), leave_one_out, 0.0)
        add_score_term(log_q, bound - leave_one_out)
        return bound

    return _objective(program)


def hvi(model, guide, keep, proposal) -> Objective:
    """Hierarchical VI: the ELBO of a guide with auxiliary variables, ``log q(x)`` estimated by one reverse-model particle (Ranganath et al. 2016).

    Args:
      model: the model over the kept addresses (and observations).
      guide: the joint ``q(x, z)``; ``keep`` names ``x``.
      proposal: the reverse model ``r(z; x)``, called as ``proposal(kept_choices, *guide_args)``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     a = pg.sample("a", pg.Normal(0.0, 1.0))
        ...     pg.sample("z", pg.Normal(m + 0.5 * a, 0.5))
        >>> @pg.gen
        ... def reverse(kept, m):
        ...     pg.sample("a", pg.Normal(kept["z"] - m, 1.0))
        >>> obj = pg.vi.hvi(model, guide, keep="z", proposal=reverse)
        >>> obj.loss(jax.random.key(0), {"x": 1.0}, (), (0.0,)).shape
        ()
    """
    return elbo(model, marginal(guide, keep, proposal, 1))


def iwhvi(model, guide, keep, proposal, num_inner: int) -> Objective:
    """Importance-weighted HVI: ELBO with ``log q(x)`` from ``num_inner`` inner particles (Sobolev & Vetrov 2019).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     a = pg.sample("a", pg.Normal(0.0, 1.0))
        ...     pg.sample("z", pg.Normal(m + 0.5 * a, 0.5))
        >>> @pg.gen
        ... def reverse(kept, m):
        ...     pg.sample("a", pg.Normal(kept["z"] - m, 1.0))
        >>> obj = pg.vi.iwhvi(model, guide, keep="z", proposal=reverse, num_inner=8)
        >>> obj.loss(jax.random.key(0), {"x": 1.0}, (), (0.0,)).shape
        ()
    """
    return elbo(model, marginal(guide, keep, proposal, num_inner))


def diwhvi(model, guide, keep, proposal, num_particles: int, num_inner: int) -> Objective:
    """Doubly importance-weighted HVI: IWAE over ``num_particles`` with an IWHVI density (Sobolev & Vetrov 2019).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     a = pg.sample("a", pg.Normal(0.0, 1.0))
        ...     pg.sample("z", pg.Normal(m + 0.5 * a, 0.5))
        >>> @pg.gen
        ... def reverse(kept, m):
        ...     pg.sample("a", pg.Normal(kept["z"] - m, 1.0))
        >>> obj = pg.vi.diwhvi(model, guide, keep="z", proposal=reverse, num_particles=4, num_inner=8)
        >>> obj.loss(jax.random.key(0), {"x": 1.0}, (), (0.0,)).shape
        ()
    """
    return iwae(model, marginal(guide, keep, proposal, num_inner), num_particles)


def _self_normalized(model, guide, num_particles, key, observations, model_args, guide_args):
    """Particles with stopped choices: (log p, log q, normalized weights, log_w)."""

    def one(k):
        k_guide, k_model = jax.random.split(k)
        trace = guide.simulate(k_guide, *guide_args)
        _check_not_observed(guide, trace.choices, as_choicemap(observations))
        choices = sg(trace.choices)
        log_q, _ = guide.assess(choices, *guide_args)
        log_p = model_log_density(model, k_model, choices.merge(as_choicemap(observations)), model_args)
        return log_p, log_q

    # return_score=True: these estimators are not score-function gradients; drop those terms.
    (log_p, log_q), _ = vmap(one, return_score=True)(jax.random.split(key, num_particles))
    log_w = log_p - log_q
    return log_p, log_q, jax.nn.softmax(sg(log_w)), log_w


def rws(model, guide, num_particles: int, *, wake_p: bool = True, wake_q: bool = True) -> Objective:
    """Reweighted wake-sleep (Bornschein & Bengio 2015): wake-p and wake-q updates as one loss.

    ``loss = -Σ_k w̄_k (log p(x, z_k) [wake-p] + log q(z_k) [wake-q])`` with stopped
    normalized weights ``w̄`` and stopped particles, so model-parameter gradients are the
    wake-p update and guide-parameter gradients the wake-q update. ``estimate`` is the
    IWAE bound of the same particles.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     pg.sample("z", pg.Normal(m, 1.0))
        >>> obj = pg.vi.rws(model, guide, 8)
        >>> jax.grad(obj.loss, argnums=3)(jax.random.key(0), {"x": 1.0}, (), (0.0,))[0].shape
        ()
    """
    num_particles = _check_particles("rws", num_particles)

    def program(key, observations, model_args, guide_args):
        log_p, log_q, weights, log_w = _self_normalized(model, guide, num_particles, key, observations, model_args, guide_args)
        terms = (log_p if wake_p else 0.0) + (log_q if wake_q else 0.0)
        surrogate = jnp.sum(weights * terms)
        return sg(_log_mean_exp(log_w)) + surrogate - sg(surrogate)

    return _objective(program)


def cubo(model, guide, num_particles: int, n: float = 2.0) -> Objective:
    """The χ upper bound ``CUBO_n = (1/n) log E_q[(p/q)^n]`` (Dieng et al. 2017).

    ``loss`` and ``estimate`` are the ``K``-sample estimate ``(1/n) log (1/K) Σ_k w_k^n``
    with ``w_k = p(x, z_k)/q(z_k)``, computed in log space (it neither underflows nor
    overflows where ``(p/q)^n`` would); minimizing ``loss`` tightens the bound. Its
    gradient, ``Σ_k w̄_k ∇ log w_k`` with weights ``w̄ ∝ w^n``, is the gradient of
    ``E[w^n]`` divided by its estimate: the same direction per batch, consistent as
    ``K`` grows. Note the estimate is not itself an upper bound for small ``K``: by
    Jensen's inequality it lies below ``CUBO_n`` on average, and for ``K = 1`` it is the
    ELBO sample ``log w``. Use enough particles when you read it as a bound.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(mu):
        ...     pg.sample("z", pg.Normal(mu, 1.0))
        >>> objective = pg.vi.cubo(model, guide, num_particles=8)
        >>> objective.loss(jax.random.key(0), pg.ChoiceMap({"x": 1.0}), (), (0.5,)).shape
        ()
    """
    num_particles = _check_particles("cubo", num_particles)

    def program(key, observations, model_args, guide_args):
        log_w = _log_weights(model, guide, num_particles, key, observations, model_args, guide_args, name="cubo")
        return _log_mean_exp(n * log_w) / n

    return _objective(program, sign=1.0)


def renyi(model, guide, alpha: float, num_particles: int) -> Objective:
    """The Rényi-α (variational Rényi) bound ``1/(1-α) log E[(p/q)^(1-α)]`` (Li & Turner 2016).

    ``alpha = 0`` is IWAE; ``alpha -> 1`` approaches the ELBO (use :func:`elbo`).
    ``loss = -bound`` with the ``K``-sample estimate.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     pg.sample("z", pg.Normal(m, 1.0))
        >>> obj = pg.vi.renyi(model, guide, alpha=0.5, num_particles=8)
        >>> jax.grad(obj.loss, argnums=3)(jax.random.key(0), {"x": 1.0}, (), (0.0,))[0].shape
        ()
    """
    num_particles = _check_particles("renyi", num_particles)
    if alpha == 1.0:
        raise SettingError("renyi: alpha = 1 is the ELBO; use pg.vi.elbo")

    def program(key, observations, model_args, guide_args):
        log_w = _log_weights(model, guide, num_particles, key, observations, model_args, guide_args, name="renyi")
        return _log_mean_exp((1.0 - alpha) * log_w) / (1.0 - alpha)

    return _objective(program)


def forward_chi2(model, guide, num_particles: int) -> Objective:
    """Forward-χ² variational importance sampling (Jerfel et al. 2021).

    Fits the guide as an importance-sampling proposal by minimizing
    ``χ²(p(z|x) || q) = E_q[(p/q)²] - 1``, with self-normalized weights: guide gradient
    ``-K Σ_k w̄_k² ∇ log q(z_k)``; the model gets the self-normalized ``E_p[∇ log p]``.
    ``loss``'s value and ``estimate`` are the self-normalized χ² estimate ``K Σ w̄² - 1``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     pg.sample("z", pg.Normal(m, 1.0))
        >>> obj = pg.vi.forward_chi2(model, guide, 8)
        >>> jax.grad(obj.loss, argnums=3)(jax.random.key(0), {"x": 1.0}, (), (0.0,))[0].shape
        ()
    """
    num_particles = _check_particles("forward_chi2", num_particles, 2)

    def program(key, observations, model_args, guide_args):
        log_p, log_q, weights, _ = _self_normalized(model, guide, num_particles, key, observations, model_args, guide_args)
        chi2 = num_particles * jnp.sum(weights**2) - 1.0
        surrogate = -num_particles * jnp.sum(weights**2 * log_q) - jnp.sum(weights * log_p)
        return chi2 + surrogate - sg(surrogate)

    return _objective(program, sign=1.0)
