"""The objective library, each written with the public ``expectation`` API.

Every constructor returns an :class:`Objective`. Call it as the training loss,

    ``objective(params, key, batch) -> scalar`` (to **minimize**),

the form that ``pg.fit``, ``pg.sweep``, ``jax.grad`` and optax take directly. One rule
turns ``params`` and ``batch`` into the generative functions' arguments (as in NumPyro,
model and guide share the data arguments):

* ``params`` is a mapping with optional entries ``"model"`` and ``"guide"`` (no others);
  each GF gets its entry as its first argument when present;
* ``batch`` is the observations (a mapping address -> value, a ChoiceMap, or ``None``), or
  a tuple ``(observations, *args)`` whose ``args`` follow the params in the arguments of
  both the model and the guide.

So ``objective(params, key, (obs, *args))`` is
``objective.loss(key, obs, (params["model"], *args), (params["guide"], *args))``, each
entry dropped when absent (:meth:`Objective.arguments` does this mapping).

The loss is ``-bound`` for lower bounds (ELBO, IWAE, VIMCO, HVI family, Rényi), the
bound itself for CUBO (an upper bound: minimizing it tightens it), and a surrogate for the
self-normalized schemes (RWS, forward χ²). The rich forms take the GF arguments as tuples:

* ``loss(key, observations, model_args, guide_args)`` — the same scalar;
  ``jax.grad(loss, argnums=(2, 3))`` gives (model, guide) parameter gradients;
* ``estimate(key, observations, model_args, guide_args)`` — the bound's value (an
  estimate; for CUBO the bound ``(1/n) log E[(p/q)^n]`` itself), without gradient.

The guide's choices plus the observations must give every model choice: the model density
is taken with ``model.generate(key, choices, ...)`` (so models built with
``pg.vi.marginal`` work) and a model choice left unconstrained is an error.

``pg.fit`` wants a leading example axis on every leaf of ``data``: observe a vector (or
a plate, ``pg.vmap``) of data points, and write the model over it.

A new objective is a few lines: write ``program(key, observations, model_args,
guide_args) -> number`` with GF calls and wrap it with ``pg.vi.expectation``; see
:func:`elbo` for the pattern.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core import handlers
from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address
from probgen.core.errors import SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.core.numerics import log_mean_exp
from probgen.distributions.strategies import PATH
from probgen.vi.estimator import EstimatorError, add_score_term, expectation, vmap_program
from probgen.vi.marginal import marginal
from probgen.core.keys import particle_keys

_PARAM_ENTRIES = ("model", "guide")


class Objective(NamedTuple):
    """A variational objective: call it as ``objective(params, key, batch) -> loss``.

    The direct form follows the rule of this module's docstring (``params`` with optional
    ``"model"`` / ``"guide"`` entries; ``batch`` the observations or ``(observations,
    *args)``). The fields are the rich forms, both taking ``(key, observations,
    model_args, guide_args)``: ``loss``, the same scalar to minimize, and ``estimate``,
    the bound's value without gradient.

    Example (a hand-made objective, to show the rule; the library's come from :func:`elbo` etc.):
        >>> import probgen as pg
        >>> def squared_error(key, observations, model_args, guide_args):
        ...     return (guide_args[0] - observations["x"]) ** 2 + guide_args[1]
        >>> objective = pg.vi.Objective(squared_error, squared_error)
        >>> objective({"guide": 3.0}, None, ({"x": 1.0}, 0.5))   # guide_args = (3.0, 0.5)
        4.5
    """

    loss: Callable[..., jax.Array]
    estimate: Callable[..., jax.Array]

    def __call__(self, params: Mapping[str, Any] | None, key: jax.Array, batch: Any = None) -> jax.Array:
        """The loss in the direct form: ``self.loss(key, *self.arguments(params, batch))``."""
        return self.loss(key, *self.arguments(params, batch))

    @staticmethod
    def arguments(params: Mapping[str, Any] | None, batch: Any = None) -> tuple:
        """``(observations, model_args, guide_args)`` of the rich forms, by the module's rule.

        Example:
            >>> import probgen as pg
            >>> pg.vi.Objective.arguments({"model": 1.0, "guide": 2.0}, ({"x": 0.5}, 3))
            ({'x': 0.5}, (1.0, 3), (2.0, 3))
            >>> pg.vi.Objective.arguments({"guide": 2.0}, {"x": 0.5})
            ({'x': 0.5}, (), (2.0,))
        """
        where = "pg.vi objective(params, key, batch)"
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise SettingError(
                f"{where}: params must be a mapping with optional entries 'model' and 'guide', "
                f"got {type(params).__name__}"
            )
        unknown = [name for name in params if name not in _PARAM_ENTRIES]
        if unknown:
            raise SettingError(
                f"{where}: params has the entr{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(repr(n) for n in unknown)}; it may hold only 'model' and 'guide' "
                "(each passed as the first argument of that generative function)"
            )
        if isinstance(batch, tuple):
            if not batch:
                raise SettingError(f"{where}: batch is an empty tuple; give (observations, *args)")
            observations, args = batch[0], tuple(batch[1:])
        else:
            observations, args = batch, ()
        model_args, guide_args = ((params[name], *args) if name in params else args for name in _PARAM_ENTRIES)
        return observations, model_args, guide_args


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


def _propose(guide, key, observations, guide_args) -> tuple:
    """A guide trace and the observations as a ChoiceMap; an observed address in the trace is an error.

    A guide proposes latent choices only: an observation would silently replace its draw
    while its density stays in ``log q``.
    """
    trace = guide.simulate(key, *guide_args)
    observations = as_choicemap(observations)
    clash = [a for a in trace.choices.addresses() if a in observations]
    if clash:
        names = ", ".join(repr(format_address(a)) for a in clash)
        raise EstimatorError(
            f"guide {guide.__name__} proposes the observed address(es) {names}; the observation "
            "would silently replace its draw while its density stays in log q. A guide proposes "
            "latent choices only"
        )
    return trace, observations


def log_weight(model, guide, key, observations, model_args, guide_args):
    """One importance weight ``log p(x, z) - log q(z)`` with ``z ~ guide``; returns (log_w, guide_trace).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     pg.sample("z", pg.Normal(0.0, 1.0))
        >>> log_w, trace = pg.vi.log_weight(model, model, jax.random.key(0), None, (), ())
        >>> float(log_w)   # the guide is the model: every weight is 1
        0.0
    """
    k_guide, k_model = jax.random.split(key)
    trace, observations = _propose(guide, k_guide, observations, guide_args)
    log_p = model_log_density(model, k_model, trace.choices.merge(observations), model_args)
    return log_p - trace.score, trace


def _objective(program: Callable, sign: float = -1.0) -> Objective:
    est = expectation(program)

    def loss(key, observations, model_args, guide_args):
        return sign * est.estimate(key, observations, tuple(model_args), tuple(guide_args))

    def estimate(key, observations, model_args, guide_args):
        return jax.lax.stop_gradient(est.estimate(key, observations, tuple(model_args), tuple(guide_args)))

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


def _log_weights(name, model, guide, num_particles, key, observations, model_args, guide_args,
                 return_score=False):
    _warn_path_bias(name, guide, key, guide_args)

    def one(k):
        return log_weight(model, guide, k, observations, model_args, guide_args)[0]

    return vmap_program(one, return_score=return_score)(particle_keys(key, num_particles))


def _power_mean(name: str, model, guide, num_particles: int, power: float, sign: float = -1.0) -> Objective:
    """``(1/c) log (1/K) Σ_k w_k^c`` over ``K`` guide draws: IWAE (c = 1), Rényi-α (c = 1 - α), CUBO (c = n)."""
    num_particles = _check_particles(name, num_particles)

    def program(key, observations, model_args, guide_args):
        log_w = _log_weights(name, model, guide, num_particles, key, observations, model_args, guide_args)
        return log_mean_exp(power * log_w, axis=0) / power

    return _objective(program, sign)


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
      An :class:`Objective`: ``objective(params, key, batch) = -ELBO``.

    Example:
        Fit a Gaussian guide with ``pg.fit``; four observations ``x_i ~ N(z, 1)`` with
        ``z ~ N(0, 1)`` give the exact posterior ``N(0.8, 0.2)``.

        >>> import jax, jax.numpy as jnp, optax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(jnp.full(4, z), 1.0))
        >>> @pg.gen
        ... def guide(p):
        ...     pg.sample("z", pg.Normal(p["mu"], jnp.exp(p["log_sd"])))
        >>> objective = pg.vi.elbo(model, guide, num_particles=8)
        >>> params = {"guide": {"mu": 0.0, "log_sd": 0.0}}
        >>> data = {"x": jnp.array([0.8, 1.2, 0.4, 1.6])}
        >>> result = pg.fit(objective, params, optax.adam(optax.cosine_decay_schedule(0.1, 300)),
        ...                 jax.random.key(0), data=data, steps=300, progress=False)
        >>> post = result.params["guide"]
        >>> bool(abs(post["mu"] - 0.8) < 0.05), bool(abs(jnp.exp(post["log_sd"]) - 0.2 ** 0.5) < 0.05)
        (True, True)
        >>> objective.estimate(jax.random.key(1), data, (), (post,)).shape   # rich form: the bound
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

        log_prior, _ = vmap_program(prior, return_score=True)(jax.random.split(jax.random.fold_in(key, 1), 1))
        log_prior = log_prior[0]
        log_lik = log_w + trace.score - log_prior
        return log_lik + beta * (log_prior - trace.score)

    if num_particles == 1:
        return _objective(one)

    def program(key, observations, model_args, guide_args):
        keys = particle_keys(key, num_particles)
        values, log_q = vmap_program(lambda k: one(k, observations, model_args, guide_args), return_score=True)(keys)
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
      An :class:`Objective`: ``objective(params, key, batch) = -IWAE``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(mu):
        ...     pg.sample("z", pg.Normal(mu, 1.0))
        >>> objective = pg.vi.iwae(model, guide, 8)
        >>> jax.grad(objective)({"guide": 0.0}, jax.random.key(0), {"x": 1.0})["guide"].shape
        ()
        >>> objective.estimate(jax.random.key(0), {"x": 1.0}, (), (0.0,)).shape   # rich form: the bound
        ()
    """
    return _power_mean("iwae", model, guide, num_particles, 1.0)


def vimco(model: GenerativeFunction, guide: GenerativeFunction, num_particles: int) -> Objective:
    """IWAE with VIMCO's leave-one-out control variates for score-function sites (Mnih & Rezende 2016).

    Particle ``k``'s learning signal is the bound minus the bound with ``log w_k``
    replaced by the mean of the other log-weights.

    Returns:
      An :class:`Objective`: ``objective(params, key, batch) = -IWAE``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     b = pg.sample("b", pg.Bernoulli(probs=0.3))
        ...     pg.sample("x", pg.Normal(2.0 * b, 1.0))
        >>> @pg.gen
        ... def guide(p):
        ...     pg.sample("b", pg.Bernoulli(probs=p))
        >>> objective = pg.vi.vimco(model, guide, 4)
        >>> jax.grad(objective)({"guide": 0.5}, jax.random.key(0), {"x": 1.0})["guide"].shape
        ()
    """
    num_particles = _check_particles("vimco", num_particles, 2)

    def program(key, observations, model_args, guide_args):
        log_w, log_q = _log_weights("vimco", model, guide, num_particles, key, observations, model_args,
                                    guide_args, return_score=True)
        bound = log_mean_exp(log_w, axis=0)
        eye = jnp.eye(num_particles, dtype=bool)
        # Mean of the other log-weights, summed without subtracting (no -inf - -inf = NaN).
        others = jnp.sum(jnp.where(eye, 0.0, log_w[None, :]), axis=1) / (num_particles - 1)
        replaced = jnp.where(eye, others[:, None], log_w[None, :])
        leave_one_out = log_mean_exp(replaced, axis=1)
        # Where every other particle has weight 0 the leave-one-out bound is -inf; a
        # baseline may be any function of the others, so fall back to 0 there.
        leave_one_out = jnp.where(jnp.isfinite(leave_one_out), leave_one_out, 0.0)
        add_score_term(log_q, bound - leave_one_out)
        return bound

    return _objective(program)


def _hierarchical(name: str, model, guide, keep, proposal, num_inner: int, num_particles: int | None = None):
    """The HVI family: ELBO (``num_particles=None``) or IWAE of the guide's marginal over ``keep``."""
    num_inner = static_int(num_inner, "num_inner", name)
    if num_particles is None:
        return elbo(model, marginal(guide, keep, proposal, num_inner))
    num_particles = _check_particles(name, num_particles)
    return iwae(model, marginal(guide, keep, proposal, num_inner), num_particles)


def hvi(model, guide, keep, proposal) -> Objective:
    """Hierarchical VI (Ranganath et al. 2016): the ELBO of a guide with auxiliary variables.

    ``log q(x)`` is estimated by one reverse-model particle. The family: :func:`hvi` (one
    inner particle), :func:`iwhvi` (``num_inner`` of them) and :func:`diwhvi` (IWAE over
    ``num_particles`` outer draws) are ``elbo`` / ``iwae`` of
    ``pg.vi.marginal(guide, keep, proposal, num_inner)``; the example builds all three.

    Args:
      model: the model over the kept addresses (and observations).
      guide: the joint ``q(x, z)``; ``keep`` names ``x``.
      proposal: the reverse model ``r(z; x)``, called as ``proposal(kept_choices, *guide_args)``:
        in the direct form it gets ``params["guide"]`` and the batch's args, as the guide does.

    Returns:
      An :class:`Objective`: ``objective(params, key, batch) = -HVI bound``.

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
        >>> family = [pg.vi.hvi(model, guide, keep="z", proposal=reverse),
        ...           pg.vi.iwhvi(model, guide, keep="z", proposal=reverse, num_inner=8),
        ...           pg.vi.diwhvi(model, guide, keep="z", proposal=reverse, num_particles=4, num_inner=8)]
        >>> [jax.grad(obj)({"guide": 0.0}, jax.random.key(0), {"x": 1.0})["guide"].shape for obj in family]
        [(), (), ()]
    """
    return _hierarchical("hvi", model, guide, keep, proposal, 1)


def iwhvi(model, guide, keep, proposal, num_inner: int) -> Objective:
    """Importance-weighted HVI: ELBO with ``log q(x)`` from ``num_inner`` inner particles (Sobolev & Vetrov 2019).

    Arguments as for :func:`hvi` (whose example builds this one too), plus ``num_inner``.

    Example:
        >>> import probgen as pg
        >>> pg.vi.iwhvi(None, None, keep="z", proposal=None, num_inner=0)
        Traceback (most recent call last):
        ...
        probgen.core.errors.SettingError: iwhvi: num_inner must be a positive int (static), got 0
    """
    return _hierarchical("iwhvi", model, guide, keep, proposal, num_inner)


def diwhvi(model, guide, keep, proposal, num_particles: int, num_inner: int) -> Objective:
    """Doubly importance-weighted HVI: IWAE over ``num_particles`` with an IWHVI density (Sobolev & Vetrov 2019).

    Arguments as for :func:`hvi` (whose example builds this one too), plus the outer
    ``num_particles`` and the inner ``num_inner``.

    Example:
        >>> import probgen as pg
        >>> pg.vi.diwhvi(None, None, keep="z", proposal=None, num_particles=2.5, num_inner=8)
        Traceback (most recent call last):
        ...
        probgen.core.errors.SettingError: diwhvi: num_particles must be a positive int (static), got 2.5
    """
    return _hierarchical("diwhvi", model, guide, keep, proposal, num_inner, num_particles)


def _self_normalized(model, guide, num_particles, key, observations, model_args, guide_args):
    """Particles with stopped choices: (log p, log q, normalized weights, log_w)."""

    def one(k):
        k_guide, k_model = jax.random.split(k)
        trace, obs = _propose(guide, k_guide, observations, guide_args)
        choices = jax.lax.stop_gradient(trace.choices)
        log_q, _ = guide.assess(choices, *guide_args)
        log_p = model_log_density(model, k_model, choices.merge(obs), model_args)
        return log_p, log_q

    # return_score=True: these estimators are not score-function gradients; drop those terms.
    (log_p, log_q), _ = vmap_program(one, return_score=True)(particle_keys(key, num_particles))
    log_w = log_p - log_q
    return log_p, log_q, jax.nn.softmax(jax.lax.stop_gradient(log_w)), log_w


def _with_gradient_of(value: jax.Array, surrogate: jax.Array) -> jax.Array:
    """``value`` with the gradient of ``surrogate`` (whose own value is dropped)."""
    return value + surrogate - jax.lax.stop_gradient(surrogate)


def rws(model, guide, num_particles: int, *, wake_p: bool = True, wake_q: bool = True) -> Objective:
    """Reweighted wake-sleep (Bornschein & Bengio 2015): wake-p and wake-q updates as one loss.

    ``loss = -Σ_k w̄_k (log p(x, z_k) [wake-p] + log q(z_k) [wake-q])`` with stopped
    normalized weights ``w̄`` and stopped particles, so model-parameter gradients are the
    wake-p update and guide-parameter gradients the wake-q update. ``estimate`` is the
    IWAE bound of the same particles.

    Returns:
      An :class:`Objective`: ``objective(params, key, batch)`` has that gradient and the
      value ``-IWAE``.

    Example (wake-p trains the model's prior mean, wake-q the guide):
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model(prior_mean):
        ...     z = pg.sample("z", pg.Normal(prior_mean, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     pg.sample("z", pg.Normal(m, 1.0))
        >>> objective = pg.vi.rws(model, guide, 8)
        >>> grads = jax.grad(objective)({"model": 0.0, "guide": 0.0}, jax.random.key(0), {"x": 1.0})
        >>> sorted(grads), grads["model"].shape
        (['guide', 'model'], ())
    """
    num_particles = _check_particles("rws", num_particles)

    def program(key, observations, model_args, guide_args):
        log_p, log_q, weights, log_w = _self_normalized(model, guide, num_particles, key, observations,
                                                        model_args, guide_args)
        terms = (log_p if wake_p else 0.0) + (log_q if wake_q else 0.0)
        return _with_gradient_of(jax.lax.stop_gradient(log_mean_exp(log_w, axis=0)), jnp.sum(weights * terms))

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

    Returns:
      An :class:`Objective`: ``objective(params, key, batch) = CUBO_n`` (minimized).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(sd):
        ...     pg.sample("z", pg.Normal(0.5, sd))
        >>> objective = pg.vi.cubo(model, guide, num_particles=8)
        >>> # At the exact posterior N(0.5, 0.5) every weight is p(x): CUBO = log p(x) = log N(1; 0, 2).
        >>> round(float(objective({"guide": 0.5 ** 0.5}, jax.random.key(0), pg.ChoiceMap({"x": 1.0}))), 2)
        -1.52
    """
    return _power_mean("cubo", model, guide, num_particles, n, sign=1.0)


def renyi(model, guide, alpha: float, num_particles: int) -> Objective:
    """The Rényi-α (variational Rényi) bound ``1/(1-α) log E[(p/q)^(1-α)]`` (Li & Turner 2016).

    ``alpha = 0`` is IWAE; ``alpha -> 1`` approaches the ELBO (use :func:`elbo`).

    Returns:
      An :class:`Objective`: ``objective(params, key, batch) = -bound`` (``K``-sample estimate).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     pg.sample("z", pg.Normal(m, 1.0))
        >>> objective = pg.vi.renyi(model, guide, alpha=0.5, num_particles=8)
        >>> jax.grad(objective)({"guide": 0.0}, jax.random.key(0), {"x": 1.0})["guide"].shape
        ()
    """
    if alpha == 1.0:
        raise SettingError("renyi: alpha = 1 is the ELBO; use pg.vi.elbo")
    return _power_mean("renyi", model, guide, num_particles, 1.0 - alpha)


def forward_chi2(model, guide, num_particles: int) -> Objective:
    """Forward-χ² variational importance sampling (Jerfel et al. 2021).

    Fits the guide as an importance-sampling proposal by minimizing
    ``χ²(p(z|x) || q) = E_q[(p/q)²] - 1``, with self-normalized weights: guide gradient
    ``-K Σ_k w̄_k² ∇ log q(z_k)``; the model gets the self-normalized ``E_p[∇ log p]``.
    ``loss``'s value and ``estimate`` are the self-normalized χ² estimate ``K Σ w̄² - 1``.

    Returns:
      An :class:`Objective`: ``objective(params, key, batch)`` has that value and gradient.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def guide(m):
        ...     pg.sample("z", pg.Normal(m, 1.0))
        >>> objective = pg.vi.forward_chi2(model, guide, 8)
        >>> jax.grad(objective)({"guide": 0.0}, jax.random.key(0), {"x": 1.0})["guide"].shape
        ()
        >>> # The self-normalized χ² estimate is zero when the guide is the exact posterior.
        >>> @pg.gen
        ... def exact():
        ...     pg.sample("z", pg.Normal(0.5, 0.5 ** 0.5))
        >>> bool(abs(pg.vi.forward_chi2(model, exact, 8)(None, jax.random.key(0), {"x": 1.0})) < 1e-5)
        True
    """
    num_particles = _check_particles("forward_chi2", num_particles, 2)

    def program(key, observations, model_args, guide_args):
        log_p, log_q, weights, _ = _self_normalized(model, guide, num_particles, key, observations, model_args,
                                                    guide_args)
        chi2 = num_particles * jnp.sum(weights**2) - 1.0
        return _with_gradient_of(chi2, -num_particles * jnp.sum(weights**2 * log_q) - jnp.sum(weights * log_p))

    return _objective(program, sign=1.0)
