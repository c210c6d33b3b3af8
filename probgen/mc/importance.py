"""Importance sampling from a generative function, with the prior or a custom proposal GF."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.choicemap import as_choicemap
from probgen.core.compiled import compiled_call
from probgen.core.gfi import GenerativeFunction
from probgen.core.trace import Trace
from probgen.mc.checks import check_gf, check_num_particles, check_proposal_covers
from probgen.mc.resampling import check_scheme, ess, log_mean_exp, resample
from probgen.core.keys import particle_keys


class ImportanceResult(NamedTuple):
    """Weighted particles from :func:`importance_sampling`.

    Attributes:
      traces: model traces with a leading particle axis.
      log_weights: ``(N,)`` unnormalized log importance weights ``log p(x, z) - log q(z)``.
      log_evidence: ``log_mean_exp(log_weights)``, the log of an unbiased estimate of ``p(x)``.
      ess: the effective sample size of the weights.
    """

    traces: Trace
    log_weights: jax.Array
    log_evidence: jax.Array
    ess: jax.Array


def importance_weight(key: jax.Array, model: GenerativeFunction, observations, model_args: tuple,
                      proposal: GenerativeFunction | None = None, proposal_args: tuple = ()):
    """One importance-weighted model trace: ``(trace, log p(x, z) - log q(z))``.

    Without a proposal the latents come from the prior (``model.generate``). With one,
    ``proposal.simulate(key, *proposal_args)`` proposes the latents and the model scores
    them together with the observations.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def guide(loc):
        ...     pg.sample("z", pg.Normal(loc, 0.5))
        >>> @pg.gen
        ... def model():
        ...     pg.sample("x", pg.Normal(pg.sample("z", pg.Normal(0.0, 1.0)), 1.0))
        >>> tr, log_w = pg.mc.importance_weight(jax.random.key(0), model, {"x": 0.5}, (), guide, (0.25,))
        >>> log_q = pg.Normal(0.25, 0.5).log_prob(tr["z"])  # log p(x, z) - log q(z)
        >>> bool(abs(log_w - (model.assess(tr.choices)[0] - log_q)) < 1e-5)
        True
    """
    observations = as_choicemap(observations)
    if proposal is None:
        return model.generate(key, observations, *model_args)
    k_prop, k_model = jax.random.split(key)
    proposed = proposal.simulate(k_prop, *proposal_args)
    trace, log_p = model.generate(k_model, proposed.choices.merge(observations), *model_args)
    return trace, log_p - proposed.score


def check_proposal(model, observations, model_args, proposal, proposal_args, where):
    """Trace-time check that ``proposal`` proposes exactly the model's latents."""
    check_gf(proposal, "proposal", where)
    key = jax.random.key(0)
    model_shape = jax.eval_shape(lambda k: model.generate(k, observations, *model_args)[0].choices, key)
    proposal_shape = jax.eval_shape(lambda k: proposal.simulate(k, *proposal_args).choices, key)
    check_proposal_covers(proposal_shape, model_shape, observations, model.__name__, proposal.__name__, where)


def importance_sampling(key: jax.Array, model: GenerativeFunction, observations, *model_args,
                        num_particles: int, proposal: GenerativeFunction | None = None,
                        proposal_args: tuple = ()) -> ImportanceResult:
    """Importance sampling of ``model``'s latents given ``observations``, vmapped over particles.

    Args:
      key: PRNG key.
      model: the model GF.
      observations: a ``ChoiceMap``/dict of observed choices.
      *model_args: the model's arguments.
      num_particles: a static positive int.
      proposal: optional proposal GF over exactly the model's latent addresses
        (default: the prior, through ``generate``).
      proposal_args: the proposal's arguments (a tuple).

    Returns:
      An :class:`ImportanceResult` (traces, log_weights, log_evidence, ess).

    The call compiles itself (:func:`probgen.core.compiled.compiled_call`): the first call with a model, particle
    count and proposal compiles one ``jax.jit`` program; later calls with new keys,
    observations or model arguments of the same shapes reuse it (Python ints among the
    arguments are compile-time constants).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> result = pg.mc.importance_sampling(jax.random.key(0), model, {"x": 0.5}, num_particles=1000)
        >>> exact = pg.Normal(0.0, jnp.sqrt(2.0)).log_prob(0.5)  # p(x) = N(x; 0, 2)
        >>> result.log_weights.shape, bool(abs(result.log_evidence - exact) < 0.05)
        ((1000,), True)
    """
    where = "importance_sampling"
    check_gf(model, "model", where)
    num_particles = check_num_particles(num_particles, where)
    if proposal is not None:
        check_gf(proposal, "proposal", where)
    return compiled_call(_importance_program, (model, num_particles, proposal), key, as_choicemap(observations),
                         tuple(model_args), tuple(proposal_args))


def _importance_program(model: GenerativeFunction, num_particles: int, proposal: GenerativeFunction | None):
    """The body of :func:`importance_sampling` for one model, particle count and proposal."""

    def run(key, observations, model_args, proposal_args):
        if proposal is not None:
            check_proposal(model, observations, model_args, proposal, proposal_args, "importance_sampling")
        keys = particle_keys(key, num_particles)
        traces, log_weights = jax.vmap(
            lambda k: importance_weight(k, model, observations, model_args, proposal, proposal_args)
        )(keys)
        return ImportanceResult(traces, log_weights, log_mean_exp(log_weights), ess(log_weights))

    return run


def importance_resampling(key: jax.Array, result: ImportanceResult, num_samples: int | None = None,
                          scheme: str = "multinomial") -> Trace:
    """Draw equally weighted traces from weighted particles (sampling importance resampling).

    Args:
      key: PRNG key.
      result: an :class:`ImportanceResult`.
      num_samples: how many draws (default: the number of particles); fewer or more is fine.
      scheme: a resampling scheme name (see ``pg.mc.resample``).

    Returns:
      Traces with a leading axis of ``num_samples``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def coin():
        ...     bias = pg.sample("bias", pg.Beta(2.0, 2.0))
        ...     pg.sample("flips", pg.Bernoulli(probs=jnp.full(5, bias)))
        >>> heads = {"flips": jnp.ones(5, jnp.int32)}
        >>> result = pg.mc.importance_sampling(jax.random.key(0), coin, heads, num_particles=4000)
        >>> posterior = pg.mc.importance_resampling(jax.random.key(1), result, 4000)
        >>> round(float(posterior["bias"].mean()), 1)  # Beta(7, 2) posterior: mean 7/9
        0.8
    """
    check_scheme(scheme, "importance_resampling")
    if num_samples is not None:
        num_samples = static_int(num_samples, "num_samples", "importance_resampling")
    idx = resample(key, jax.lax.stop_gradient(result.log_weights), num_samples, scheme)
    return jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), result.traces)
