"""Posterior predictive draws and pointwise log-likelihoods of a model, from any posterior.

:func:`predictive` runs a model once per posterior draw with that draw's latents fixed
(``model.generate``, vmapped over draws in one compiled program): the observed sites, and
any address the posterior does not fix, are drawn afresh, giving the posterior predictive
distribution. Given the observations, it also returns the *pointwise* log-likelihood
``log p(y_i | theta_s)`` of every observation element and draw (not summed over a site's
batch shape, a ``pg.vmap`` plate or ``pg.scan`` steps), read from the trace's per-site
scores under :class:`probgen.core.handlers.PointwiseScores`. That array is what leave-one-out
cross-validation and WAIC need; :meth:`PredictiveResult.to_arviz` hands it to ``arviz.loo``
and ``arviz.waic``.

Reference: Vehtari, Gelman & Gabry, "Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC", Statistics and Computing 2017.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from probgen.core import handlers
from probgen.core.checks import static_int
from probgen.core.choicemap import Address, ChoiceMap, as_choicemap, format_address, normalize_address, select
from probgen.core.compiled import compiled_call
from probgen.core.errors import AddressError, ArgumentError, ConstraintError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.mc.chains import MCMCResult
from probgen.mc.checks import check_gf
from probgen.mc.export import to_arviz
from probgen.mc.importance import ImportanceResult
from probgen.mc.resampling import resample
from probgen.mc.smc import SMCResult
from probgen.mc.smoothing import SmoothedPaths, genealogy_smoother
from probgen.mc.tempering import TemperedResult
from probgen.core.keys import particle_keys

_WHERE = "predictive"


@dataclasses.dataclass(frozen=True)
class PredictiveResult:
    """What :func:`predictive` returns; every array has the leading ``sample_shape``.

    Attributes:
      draws: ``{address name: array}`` for every site the model produced (or the
        ``return_sites``), in the model's own (constrained) coordinates: posterior
        predictive draws of the observed sites and of every address the posterior does not
        fix, and the posterior's own values at the addresses it fixes.
      posterior: ``{address name: array}``, the posterior draws the model ran with (after
        resampling, for weighted particles).
      log_likelihood: with ``observations``, ``{observed address name: array}`` of shape
        ``sample_shape + observation batch shape``: the pointwise ``log p(y_i | theta_s)``
        (event dimensions summed, nothing else); None otherwise.
      observations: the observations as ``{address name: array}``, or None.
      log_weights: for weighted particles kept without resampling, their normalized log
        weights ``(num_particles,)``: posterior expectations are weighted means. None otherwise.
      sample_shape: ``(num_draws,)``, or ``(num_chains, num_draws)`` for a
        :func:`pg.mc.run_mcmc` result or draws given with a chain axis (static).

    Names are addresses written ``"outer/inner"`` (like ``pg.mc.posterior``'s position
    names and ``run_mcmc``'s samples). A ``PredictiveResult`` is a pytree.
    """

    draws: dict
    posterior: dict
    log_likelihood: dict | None
    observations: dict | None
    log_weights: jax.Array | None
    sample_shape: tuple = ()

    def to_arviz(self, **kwargs: Any):
        """The result as ArviZ data: groups ``posterior``, ``posterior_predictive``,
        ``log_likelihood`` and ``observed_data``, ready for ``arviz.loo`` / ``arviz.waic``.

        One draw axis becomes one chain. The posterior predictive group holds the draws of
        every address the posterior did not fix (the observed sites among them); names
        ``"outer/inner"`` become ``"outer.inner"`` (ArviZ names may not hold ``/``).

        Args:
          **kwargs: passed on to :func:`pg.mc.to_arviz` (``coords``, ``dims``, ``sample_stats``).

        Returns:
          What :func:`pg.mc.to_arviz` returns.

        Raises:
          SettingError: the draws are weighted (resample them: ``predictive(...,
            num_samples=...)``), or have more than two leading axes.
          ImportError: ArviZ is not installed.
        """
        where = "PredictiveResult.to_arviz"
        if self.log_weights is not None:
            raise SettingError(f"{where}: the draws are weighted particles; ArviZ needs equally weighted draws. "
                               "Resample them: pass num_samples= to pg.mc.predictive")
        if len(self.sample_shape) not in (1, 2):
            raise SettingError(f"{where}: ArviZ needs (num_chains, num_draws) or (num_draws,) leading axes, "
                               f"got sample_shape {self.sample_shape}")

        def group(values):
            if values is None:
                return None
            chains = (lambda v: v[None]) if len(self.sample_shape) == 1 else (lambda v: v)
            return {name.replace("/", "."): chains(value) for name, value in values.items()}

        fresh = {name: value for name, value in self.draws.items() if name not in self.posterior}
        observed = None if self.observations is None else {
            name.replace("/", "."): value for name, value in self.observations.items()}
        return to_arviz(group(self.posterior), observed_data=observed, posterior_predictive=group(fresh) or None,
                        log_likelihood=group(self.log_likelihood), **kwargs)


jax.tree_util.register_dataclass(
    PredictiveResult, data_fields=["draws", "posterior", "log_likelihood", "observations", "log_weights"],
    meta_fields=["sample_shape"])


def predictive(model: GenerativeFunction, posterior: Any, *model_args: Any, key: jax.Array,
               num_samples: int | None = None, observations: ChoiceMap | Mapping | None = None,
               return_sites: Sequence[Address] | Address | None = None,
               guide_args: tuple | None = None) -> PredictiveResult:
    """Posterior predictive draws of ``model`` and, given the data, its pointwise log-likelihood.

    For each posterior draw ``theta_s`` the model runs with ``theta_s`` fixed
    (``model.generate``; one key per draw; vmapped over draws and compiled on the first
    call): every address ``theta_s`` does not fix, the observed sites included, is drawn from
    the model. With ``observations`` the model runs a second time with ``theta_s`` and the
    data fixed, and each observed site's log density is kept per element: the pointwise
    ``log p(y_i | theta_s)`` of a vector-valued site, of every element of a ``pg.vmap`` plate
    and of every step of a ``pg.scan``. Latents that neither the posterior nor the data fix
    are drawn from the prior in both runs (independently).

    Args:
      model: the generative function.
      posterior: one of

        * draws: a mapping ``{address: array}`` (address a string ``"outer/inner"``, a tuple,
          or nested dicts; a ``pg.ChoiceMap``) in the model's own coordinates, each with
          leading axes ``(num_draws,)`` or ``(num_chains, num_draws)`` before the site's
          shape (the same for all); or a :func:`pg.mc.run_mcmc` result on a
          :func:`pg.mc.posterior`, whose ``(num_chains, num_draws)`` axes are kept;
        * weighted particles: an :class:`ImportanceResult`, an :class:`SMCResult` run with
          ``keep="all"`` (its ancestral paths, :func:`pg.mc.genealogy_smoother`), a
          :class:`SmoothedPaths`, or a :class:`TemperedResult` of a model. With
          ``num_samples`` they are resampled (multinomial, by their normalized weights) to
          equally weighted draws; without, every particle is used and the result keeps the
          normalized ``log_weights``. The traces of importance sampling and SMC hold the
          data too: ``observations`` is required to tell which addresses to redraw;
        * a fitted guide ``(guide, params)``: an object with ``sample_posterior(key, params,
          num_samples)`` (a ``pg.vi`` autoguide), or a generative function run as
          ``guide.simulate(key, params, *guide_args)``, ``num_samples`` times.
      *model_args: the model's arguments.
      key: PRNG key (keyword).
      num_samples: how many draws a guide makes (required for a guide), or how many
        equally weighted draws to resample from weighted particles. Draws given as such fix
        their own number: there it must be None (or that number).
      observations: the observed data (dict or ``pg.ChoiceMap``); enables
        ``log_likelihood``. Its addresses may not also be fixed by the posterior.
      return_sites: addresses (or prefixes, e.g. a nested call) whose draws to return;
        default every site.
      guide_args: the arguments after ``params`` of a generative-function guide (default:
        ``model_args``, as in ``pg.vi`` objectives where model and guide share the data).

    Returns:
      A :class:`PredictiveResult` (``draws``, ``posterior``, ``log_likelihood``,
      ``observations``, ``log_weights``, ``sample_shape``; ``to_arviz()``).

    Raises:
      AddressError: a posterior, observation or ``return_sites`` address the model does not
        have, or one both in the posterior and in the observations.
      ConstraintError: draws whose shape does not end with their site's shape, or whose
        leading axes differ between addresses; an observation inside a site scored as one
        unit (``pg.vi.marginal``), which has no pointwise log-likelihood.
      ArgumentError: a ``posterior`` of another kind, or weighted traces without observations.
      SettingError: a bad ``num_samples``.

    Example:
        Posterior draws of ``mu``, e.g. from NUTS, given as a dict; the log predictive
        density of held-out data is ``log_mean_exp`` over draws of the summed log-likelihood.

        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model(template):
        ...     mu = pg.sample("mu", pg.Normal(0.0, 1.0))
        ...     pg.sample("y", pg.Normal(jnp.full(template.shape, mu), 1.0))
        >>> mu = jnp.linspace(0.0, 1.2, 500)          # stands in for 500 posterior draws
        >>> result = pg.predictive(model, {"mu": mu}, jnp.zeros(3), key=jax.random.key(0),
        ...                        observations={"y": jnp.array([0.9, 1.4, 0.2])})
        >>> result.draws["y"].shape, result.log_likelihood["y"].shape   # (draws, observations)
        ((500, 3), (500, 3))
    """
    check_gf(model, "model", _WHERE)
    model_args = tuple(model_args)
    if num_samples is not None:
        num_samples = static_int(num_samples, "num_samples", _WHERE)
    layout = jax.eval_shape(lambda k: model.simulate(k, *model_args).choices, jax.random.key(0)).to_dict()
    names = {format_address(a): a for a in layout}
    observed = None if observations is None else as_choicemap(observations)
    if observed is not None:
        for address in observed.addresses():
            if address not in layout:
                raise AddressError(f"{_WHERE}: observations hold {format_address(address)!r}, which "
                                   f"{model.__name__} does not have (its addresses: {', '.join(names)})")

    k_posterior, k_run = jax.random.split(key)
    values, log_weights, from_traces = _posterior_draws(
        posterior, model, model_args, observed, num_samples, guide_args, k_posterior)
    values = _resolve(values, layout, names, observed, from_traces, model.__name__)
    sample_shape = _sample_shape(values, layout)
    num_resampled = num_samples if log_weights is not None else None
    if log_weights is None and num_samples is not None and num_samples != math.prod(sample_shape):
        raise SettingError(f"{_WHERE}: num_samples={num_samples}, but the posterior's draws fix their number "
                           f"({sample_shape}); num_samples is for guides and weighted particles")
    selection = _return_selection(return_sites, layout, names, model.__name__)

    values, choices, log_likelihood, log_weights = compiled_call(
        _predictive_program, (model, sample_shape, num_resampled), k_run, ChoiceMap(values), log_weights, observed,
        model_args)
    if selection is not None:
        choices = choices.filter(selection)

    def named(tree: ChoiceMap | None) -> dict | None:
        return None if tree is None else {format_address(a): v for a, v in tree.to_dict().items()}

    return PredictiveResult(
        draws=named(choices), posterior=named(values), log_likelihood=named(log_likelihood),
        observations=named(observed), log_weights=log_weights,
        sample_shape=sample_shape if num_resampled is None else (num_resampled,),
    )


def _predictive_program(model: GenerativeFunction, sample_shape: tuple[int, ...], num_resampled: int | None):
    """One compiled run: resample weighted draws (``num_resampled``), then run the model per draw.

    Returns ``(posterior values, choices, pointwise log-likelihood or None, log weights or None)``,
    each with the leading sample shape.
    """

    def run(key, values, log_weights, observed, model_args):
        def one(key, theta):
            k_draw, k_score = jax.random.split(key)
            trace, _ = model.generate(k_draw, theta, *model_args)
            if observed is None:
                return trace.choices, None
            with handlers.handle(handlers.PointwiseScores()):
                scored, _ = model.generate(k_score, theta.merge(observed), *model_args)
            return trace.choices, _pointwise(scored.site_scores, observed, model.__name__)

        k_resample, k_run = jax.random.split(key)
        shape = sample_shape
        if log_weights is not None and num_resampled is not None:
            index = resample(k_resample, jax.lax.stop_gradient(log_weights), num_resampled, "multinomial")
            values = jax.tree.map(lambda v: jnp.take(v, index, axis=0), values)
            log_weights, shape = None, (num_resampled,)
        elif log_weights is not None:
            log_weights = jax.nn.log_softmax(log_weights)
        count = math.prod(shape)
        flat = jax.tree.map(lambda v: jnp.reshape(v, (count,) + jnp.shape(v)[len(shape):]), values)
        choices, log_likelihood = jax.vmap(one)(particle_keys(k_run, count), flat)
        unflatten = lambda tree: jax.tree.map(lambda v: jnp.reshape(v, shape + jnp.shape(v)[1:]), tree)  # noqa: E731
        return values, unflatten(choices), unflatten(log_likelihood), log_weights

    return run


def _pointwise(site_scores: ChoiceMap | None, observed: ChoiceMap, name: str) -> ChoiceMap:
    """Each observed address's per-element log density, read from pointwise site scores."""
    scores = {} if site_scores is None else site_scores.to_dict()
    out = {}
    for address in observed.addresses():
        if address in scores:
            out[address] = scores[address]
            continue
        unit = next((a for a in scores if address[: len(a)] == a), ())
        raise ConstraintError(
            f"{_WHERE}: the observation {format_address(address)!r} of {name} lies inside "
            f"{format_address(unit)!r}, scored as one unit (a marginal or normalized family): it has no "
            "pointwise log-likelihood")
    return ChoiceMap(out)


def _is_guide(posterior: Any) -> bool:
    return (type(posterior) is tuple and len(posterior) == 2
            and (hasattr(posterior[0], "sample_posterior") or isinstance(posterior[0], GenerativeFunction)))


def _posterior_draws(posterior, model, model_args, observed, num_samples, guide_args, key):
    """``(values, log_weights or None, from_traces)`` of any accepted posterior, values by address."""
    if isinstance(posterior, MCMCResult):
        if not isinstance(posterior.samples, Mapping):
            raise ArgumentError(
                f"{_WHERE}: this run_mcmc result sampled a plain logdensity function, so its draws have no "
                f"addresses; run it on pg.mc.posterior({model.__name__}, observations, *args)")
        return posterior.samples, None, False
    if isinstance(posterior, (ImportanceResult, SMCResult, SmoothedPaths)):
        if isinstance(posterior, ImportanceResult):
            choices, log_weights = posterior.traces.choices, posterior.log_weights
        else:
            if isinstance(posterior, SMCResult):
                if posterior.states is None:
                    raise ArgumentError(f"{_WHERE}: the SMC result kept only its last step; run pg.mc.smc with "
                                        "keep='all' so the particles' whole paths can be traced back")
                posterior = genealogy_smoother(posterior.states, posterior.infos)
            choices, log_weights = posterior.choices, posterior.log_weights
        if observed is None:
            raise ArgumentError(
                f"{_WHERE}: the traces of a {type(posterior).__name__} hold the observed choices too; pass "
                "observations= so that predictive knows which addresses to draw afresh")
        return choices, log_weights, True
    if isinstance(posterior, TemperedResult):
        if posterior.final.latents is None:
            raise ArgumentError(f"{_WHERE}: this tempered SMC result sampled a TemperingTarget, whose particles "
                                "have no addresses; run pg.mc.tempered_smc on the model")
        return posterior.final.latents, posterior.final.log_weights, False
    if _is_guide(posterior):
        guide, params = posterior
        if num_samples is None:
            raise SettingError(f"{_WHERE}: a guide posterior needs num_samples (how many draws to make)")
        if hasattr(guide, "sample_posterior"):
            return guide.sample_posterior(key, params, num_samples), None, False
        args = (params, *(model_args if guide_args is None else tuple(guide_args)))
        return compiled_call(_guide_program, (guide, num_samples), key, args), None, False
    if isinstance(posterior, Mapping):
        return posterior, None, False
    raise ArgumentError(
        f"{_WHERE}: posterior must be a mapping of draws by address, a run_mcmc result, an ImportanceResult, "
        "an SMCResult, SmoothedPaths, a TemperedResult, or a fitted guide (guide, params); got "
        f"{type(posterior).__name__}")


def _guide_program(guide: GenerativeFunction, num_samples: int):
    """``num_samples`` draws of a hand-written guide's choices, vmapped."""

    def run(key, args):
        return jax.vmap(lambda k: guide.simulate(k, *args).choices)(particle_keys(key, num_samples))

    return run


def _resolve(values, layout: dict, names: dict, observed: ChoiceMap | None, from_traces: bool,
             model_name: str) -> dict:
    """``{model address: array}``: names resolved, unknown addresses refused, observed ones handled."""
    resolved = {}
    for address, value in as_choicemap(values).to_dict().items():
        if address not in layout:
            single = address[0] if len(address) == 1 else None
            if single not in names:
                raise AddressError(
                    f"{_WHERE}: the posterior holds {format_address(address)!r}, which {model_name} does not have "
                    f"(its addresses: {', '.join(names)})")
            address = names[single]
        if observed is not None and address in observed:
            if from_traces:
                continue  # the data the traces were weighted by: drawn afresh here
            raise AddressError(
                f"{_WHERE}: {format_address(address)!r} is both fixed by the posterior and observed; the "
                "posterior holds latent draws only")
        resolved[address] = jnp.asarray(value)
    if not resolved:
        raise SettingError(f"{_WHERE}: the posterior fixes no address of {model_name}")
    return resolved


def _sample_shape(values: dict, layout: dict) -> tuple[int, ...]:
    """The leading axes every posterior array has before its site's own shape (all the same)."""
    leads = {}
    for address, value in values.items():
        site, shape = tuple(layout[address].shape), tuple(jnp.shape(value))
        lead = len(shape) - len(site)
        if lead < 1 or shape[lead:] != site:
            raise ConstraintError(
                f"{_WHERE}: posterior draws at {format_address(address)!r} have shape {shape}, but the site holds "
                f"values of shape {site}: expected (num_draws, *{site}) or (num_chains, num_draws, *{site})")
        leads[address] = shape[:lead]
    if len(set(leads.values())) > 1:
        found = ", ".join(f"{format_address(a)!r}: {lead}" for a, lead in leads.items())
        raise ConstraintError(f"{_WHERE}: the posterior draws disagree on their leading (draw) axes: {found}")
    return next(iter(leads.values()))


def _return_selection(return_sites, layout: dict, names: dict, model_name: str):
    """A selection of the requested sites (a name, an address, or a prefix of addresses), or None."""
    if return_sites is None:
        return None
    if isinstance(return_sites, str):
        return_sites = [return_sites]
    elif isinstance(return_sites, tuple) and any(a[: len(return_sites)] == return_sites for a in layout):
        return_sites = [return_sites]   # one hierarchical address, not a sequence of names
    chosen = []
    for site in return_sites:
        address = names.get(site) if isinstance(site, str) else None
        if address is None:
            address = normalize_address(site)
            if not any(a[: len(address)] == address for a in layout):
                raise AddressError(f"{_WHERE}: return_sites names {format_address(address)!r}, which {model_name} "
                                   f"does not have (its addresses: {', '.join(names)})")
        chosen.append(address)
    return select(*chosen)
