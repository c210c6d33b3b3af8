"""Tempered SMC for a static model: from the prior to the posterior through ``p(z) p(x|z)^beta``.

Each step picks the next inverse temperature by bisection so that the ESS of the
incremental weights ``(beta' - beta) log p(x|z)`` equals ``target_ess * N``, reweights,
resamples, and rejuvenates every particle with MCMC moves (random-walk MH, MALA or HMC)
that leave ``p(z) p(x|z)^beta'`` invariant. The product of the mean incremental weights
estimates ``p(x)``.

References: Neal, "Annealed importance sampling", 2001; Del Moral, Doucet & Jasra,
"Sequential Monte Carlo samplers", JRSS-B 2006; Jasra et al., "Inference for Lévy-driven
stochastic volatility models via adaptive SMC", 2011 (the ESS-bisection schedule).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address, select
from probgen.core.errors import ArgumentError, ConstraintError, MissingChoiceError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.kernels import Kernel
from probgen.mc.checks import check_gf, check_num_particles
from probgen.mc.mcmc import hmc_proposal, mala_proposal, mh_accept, rw_proposal
from probgen.mc.resampling import check_ess_threshold, check_scheme, ess, log_mean_exp, maybe_resample

MOVES = ("rwmh", "mala", "hmc")


class TemperedState(NamedTuple):
    """Particles of tempered SMC.

    Attributes:
      latents: the latent choices, leading particle axis.
      log_likelihood: ``(N,)`` ``log p(x | z)`` of each particle.
      log_weights: ``(N,)``; ``log_mean_exp`` of them is the running ``log Z_hat``.
      log_evidence: the running log-evidence estimate.
      beta: the current inverse temperature in ``[0, 1]``.
      step: how many tempering steps were taken.
    """

    latents: ChoiceMap
    log_likelihood: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    beta: jax.Array
    step: jax.Array


class TemperedInfo(NamedTuple):
    """Diagnostics of one tempering step.

    Attributes:
      beta: the new inverse temperature.
      ess: effective sample size of the reweighted particles, before resampling.
      acceptance_rate: mean acceptance probability of the MCMC moves (0 without moves).
    """

    beta: jax.Array
    ess: jax.Array
    acceptance_rate: jax.Array


class TemperedResult(NamedTuple):
    """What :func:`tempered_smc` returns: ``log_evidence``, the ``final`` state, the
    ``num_steps`` taken and the ``betas`` schedule (NaN past ``num_steps``)."""

    log_evidence: jax.Array
    final: TemperedState
    num_steps: jax.Array
    betas: jax.Array


def next_beta(beta: jax.Array, log_likelihood: jax.Array, target_ess: float, num_bisection_steps: int = 40):
    """The next inverse temperature: the ESS of ``(beta' - beta) * log_likelihood`` hits
    ``target_ess * N`` (or ``beta' = 1`` when even that keeps the ESS above target).

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> float(pg.mc.next_beta(jnp.asarray(0.0), jnp.zeros(10), 0.5))
        1.0
    """
    num = log_likelihood.shape[0]
    num_bisection_steps = static_int(num_bisection_steps, "num_bisection_steps", "next_beta")
    max_delta = 1.0 - beta
    log_likelihood = jax.lax.stop_gradient(log_likelihood)

    def ess_frac(delta):
        incr = jnp.where(delta > 0, delta * log_likelihood, 0.0)
        return ess(incr) / num

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = ess_frac(mid) >= target_ess
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    _, hi = jax.lax.fori_loop(0, num_bisection_steps, bisect, (jnp.zeros_like(beta), max_delta))
    delta = jnp.where(ess_frac(max_delta) >= target_ess, max_delta, hi)
    return jnp.minimum(beta + delta, 1.0)


def tempered_smc_kernel(model: GenerativeFunction, observations, *model_args, num_particles: int,
                        target_ess: float = 0.5, move: str = "hmc", step_size: float = 0.1,
                        num_leapfrog_steps: int = 10, num_mcmc_steps: int = 5,
                        scheme: str = "systematic") -> Kernel:
    """Adaptive tempered SMC as a kernel: ``init(particles)``, ``step(key, state)``.

    Args:
      model: a static model GF; its latent sites must be continuous.
      observations: ``ChoiceMap``/dict of observed choices.
      *model_args: the model's arguments.
      num_particles: a static positive int.
      target_ess: fraction in ``(0, 1]`` of ``N`` the ESS keeps at each step.
      move: MCMC rejuvenation, ``"rwmh"`` (``step_size`` is the walk's scale), ``"mala"``
        or ``"hmc"``.
      step_size: step size of the move.
      num_leapfrog_steps: leapfrog steps per HMC move.
      num_mcmc_steps: moves per particle per tempering step.
      scheme: resampling scheme.

    Returns:
      A kernel: ``init(particles) -> TemperedState`` at ``beta = 0``, where ``particles``
      is a ``ChoiceMap``/dict holding every latent choice with a leading axis of
      ``num_particles``, drawn from the prior (e.g. the choices of ``model.simulate``
      vmapped over keys; other addresses are ignored); and
      ``step(key, state) -> (state, TemperedInfo)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(jnp.zeros(2), 1.0))
        ...     return pg.sample("x", pg.Normal(z, 0.5))
        >>> kernel = pg.mc.tempered_smc_kernel(model, {"x": jnp.ones(2)}, num_particles=100)
        >>> prior = jax.vmap(model.simulate)(jax.random.split(jax.random.key(0), 100))
        >>> state, info = kernel.step(jax.random.key(1), kernel.init(prior.choices))
        >>> bool(info.beta > 0), state.latents["z"].shape
        (True, (100, 2))
    """
    where = "tempered_smc"
    check_gf(model, "model", where)
    num_particles = check_num_particles(num_particles, where)
    check_ess_threshold(target_ess, where, "target_ess", allow_zero=False)
    check_scheme(scheme, where)
    if not isinstance(move, str) or move not in MOVES:
        raise SettingError(f"{where}: unknown move {move!r}; choose one of {', '.join(MOVES)}")
    num_mcmc_steps = static_int(num_mcmc_steps, "num_mcmc_steps", where, minimum=0)
    num_leapfrog_steps = static_int(num_leapfrog_steps, "num_leapfrog_steps", where)
    observations = as_choicemap(observations)
    key0 = jax.random.key(0)
    trace_shape, weight_shape = jax.eval_shape(lambda k: model.generate(k, observations, *model_args), key0)
    shape = trace_shape.choices
    observed = set(observations.addresses())
    latent_addresses = [a for a in shape.addresses() if a not in observed]
    if not latent_addresses:
        raise SettingError(f"{where}: {model.__name__} has no latent choices left once the observations are fixed")
    for address in latent_addresses:
        if not jnp.issubdtype(shape[address].dtype, jnp.floating):
            raise ArgumentError(
                f"{where}: latent address {format_address(address)!r} of {model.__name__} is "
                f"{shape[address].dtype}; tempered SMC moves need continuous latents"
            )
    latent_selection = select(*latent_addresses)
    observed_selection = latent_selection.complement()
    dtype = weight_shape.dtype  # every float of the state: the model's (float64 under x64)

    def log_likelihood_and_joint(latents):
        # Every choice is given, so ``generate`` draws nothing and its weight is the joint.
        trace, joint = model.generate(key0, latents.merge(observations), *model_args)
        return model.project(trace, observed_selection), joint

    def init(particles) -> TemperedState:
        particles = as_choicemap(particles)
        missing = [a for a in latent_addresses if a not in particles]
        if missing:
            raise MissingChoiceError(
                f"{where}.init: particles lack the latent address(es) "
                f"{', '.join(repr(format_address(a)) for a in missing)} of {model.__name__}")
        latents = {}
        for address in latent_addresses:
            value, site = particles[address], shape[address]
            if jnp.shape(value) != (num_particles,) + site.shape:
                raise ConstraintError(
                    f"{where}.init: particles at {format_address(address)!r} need shape "
                    f"{(num_particles,) + site.shape} (num_particles first), got {jnp.shape(value)}")
            latents[address] = jnp.asarray(value, site.dtype)
        latents = ChoiceMap(latents)
        log_lik, _ = jax.vmap(log_likelihood_and_joint)(latents)
        zero = jnp.zeros((), dtype)
        return TemperedState(latents, log_lik.astype(dtype), jnp.zeros((num_particles,), dtype),
                             zero, zero, jnp.zeros((), jnp.int32))

    def move_one(key, latents, beta):
        def logdensity(z):
            log_lik, joint = log_likelihood_and_joint(z)
            return joint - (1.0 - beta) * log_lik

        def one_move(z, k):
            k_prop, k_accept = jax.random.split(k)
            if move == "rwmh":
                proposed = rw_proposal(k_prop, z, step_size)
                log_alpha = logdensity(proposed) - logdensity(z)
            elif move == "mala":
                proposed, log_alpha = mala_proposal(k_prop, z, logdensity, step_size)
            else:
                proposed, log_alpha = hmc_proposal(k_prop, z, logdensity, step_size, num_leapfrog_steps)
            z, info = mh_accept(k_accept, log_alpha, proposed, z)
            return z, info.acceptance_rate.astype(dtype)

        latents, rates = jax.lax.scan(one_move, latents, jax.random.split(key, num_mcmc_steps))
        log_lik, _ = log_likelihood_and_joint(latents)
        return latents, log_lik, jnp.mean(rates)

    def step(key, state: TemperedState):
        k_resample, k_move = jax.random.split(key)
        beta = next_beta(state.beta, state.log_likelihood, target_ess)
        delta = beta - state.beta
        increments = jnp.where(delta > 0, delta * state.log_likelihood, 0.0)
        log_weights = state.log_weights + increments
        ess_now = ess(log_weights)
        (latents, log_lik), log_weights, _, _ = maybe_resample(
            k_resample, (state.latents, state.log_likelihood), log_weights, 1.0, scheme
        )
        if num_mcmc_steps > 0:
            keys = jax.random.split(k_move, num_particles)
            latents, log_lik, rates = jax.vmap(lambda k, z: move_one(k, z, beta))(keys, latents)
            acceptance_rate = jnp.mean(rates)
        else:
            acceptance_rate = jnp.zeros((), dtype)
        new_state = TemperedState(latents, log_lik, log_weights, log_mean_exp(log_weights), beta,
                                  state.step + 1)
        return new_state, TemperedInfo(beta, ess_now, acceptance_rate)

    return Kernel(init=init, step=step)


def tempered_smc(key: jax.Array, model: GenerativeFunction, observations, *model_args, num_particles: int,
                 target_ess: float = 0.5, move: str = "hmc", step_size: float = 0.1,
                 num_leapfrog_steps: int = 10, num_mcmc_steps: int = 5, scheme: str = "systematic",
                 max_steps: int = 200) -> TemperedResult:
    """Run adaptive tempered SMC from the prior (``beta = 0``) until ``beta = 1``, in one call.

    Draws the particles from the prior, then drives :func:`tempered_smc_kernel` with a
    ``lax.while_loop``. Arguments are those of :func:`tempered_smc_kernel`, plus ``key``
    and ``max_steps`` (a cap on the number of tempering steps).

    Returns:
      A :class:`TemperedResult` (``log_evidence``, ``final`` particles at the posterior,
      ``num_steps``, ``betas``).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def mean_model(noise):
        ...     mu = pg.sample("mu", pg.Normal(0.0, 1.0))
        ...     pg.sample("data", pg.Normal(mu, noise))
        >>> noise, data = jnp.ones(4), jnp.array([0.5, 1.5, 1.0, 1.0])
        >>> result = pg.mc.tempered_smc(jax.random.key(0), mean_model, {"data": data}, noise, num_particles=400)
        >>> exact = pg.MultivariateNormal(jnp.zeros(4), jnp.eye(4) + 1.0).log_prob(data)
        >>> float(result.final.beta), bool(abs(result.log_evidence - exact) < 0.1)
        (1.0, True)
    """
    max_steps = static_int(max_steps, "max_steps", "tempered_smc")
    kernel = tempered_smc_kernel(
        model, observations, *model_args, num_particles=num_particles, target_ess=target_ess, move=move,
        step_size=step_size, num_leapfrog_steps=num_leapfrog_steps, num_mcmc_steps=num_mcmc_steps,
        scheme=scheme,
    )
    k_init, k_run = jax.random.split(key)
    # Particles from the prior: the kernel has checked num_particles; the observed choices are dropped by init.
    keys = jax.random.split(k_init, int(num_particles))
    prior = jax.vmap(lambda k: model.generate(k, as_choicemap(observations), *model_args)[0])(keys)
    state = kernel.init(prior.choices)
    betas = jnp.full((max_steps,), jnp.nan, state.beta.dtype)

    def cond(carry):
        s, _ = carry
        return (s.beta < 1.0) & (s.step < max_steps)

    def body(carry):
        s, bs = carry
        s, info = kernel.step(jax.random.fold_in(k_run, s.step), s)
        return s, bs.at[s.step - 1].set(info.beta)

    final, betas = jax.lax.while_loop(cond, body, (state, betas))
    return TemperedResult(final.log_evidence, final, final.step, betas)
