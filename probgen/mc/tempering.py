"""Tempered SMC for a static target: from the prior to the posterior through ``p(z) p(x|z)^beta``.

Each step picks the next inverse temperature by bisection so that the ESS of the
incremental weights ``(beta' - beta) log p(x|z)`` equals ``target_ess * N``, reweights,
resamples, and rejuvenates every particle with MCMC moves (random-walk MH, MALA or HMC)
that leave ``p(z) p(x|z)^beta'`` invariant. The product of the mean incremental weights
estimates ``p(x)``.

The target is a model (a generative function and its observations) or a
:class:`TemperingTarget`, a pair of plain log densities ``log_prior(position)`` and
``log_likelihood(position)``. A model's particles move in unconstrained coordinates: each
latent site with support ``S`` holds ``z = biject_to(S)(u)`` and the prior density of ``u``
carries the log-det Jacobian (:mod:`probgen.core.unconstrained`), so positive or bounded
latents (a HalfCauchy scale, a probability) move freely with HMC or MALA, and latents
inside ``pg.scan`` / ``pg.vmap`` are coordinates like any other. The state holds both the
unconstrained ``position`` and the model's own ``latents``.

Adaptive moves (on by default): before each stage's moves, the diagonal inverse mass matrix
(the random walk's per-coordinate scale) is set to the per-coordinate variance of the
resampled particle cloud (as in Buchholz, Chopin & Jacob 2021), and the step size follows
the previous stage's mean acceptance rate towards a target (0.65 for HMC, 0.57 for MALA,
0.234 for the random walk) by a Robbins–Monro step in log scale. ``adapt=False`` keeps a
fixed step size and a unit mass. One diagonal mass and one step size serve targets whose
scales differ between coordinates, not targets whose scale changes from place to place:
on Neal's funnel the cloud's variance is the mouth's and particles in the neck stall
(``tests/mc/test_tempering_adaptive.py``). The moves are the position proposals of
:mod:`probgen.mc.mcmc` run in whitened coordinates ``y = (z - z0) / sqrt(m)``: a unit-mass
move on ``y`` is the move with inverse mass matrix ``diag(m)`` on ``z``.

References: Neal, "Annealed importance sampling", 2001; Del Moral, Doucet & Jasra,
"Sequential Monte Carlo samplers", JRSS-B 2006; Jasra et al., "Inference for Lévy-driven
stochastic volatility models via adaptive SMC", 2011 (the ESS-bisection schedule);
Buchholz, Chopin & Jacob, "Adaptive tuning of Hamiltonian Monte Carlo within sequential
Monte Carlo", Bayesian Analysis 2021 (the adaptive moves).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address, select
from probgen.core.errors import ArgumentError, ConstraintError, MissingChoiceError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.core.numerics import _pairwise_sum
from probgen.core.unconstrained import assess_unconstrained, to_unconstrained
from probgen.kernels import Kernel
from probgen.mc.checks import check_num_particles
from probgen.core.compiled import compiled_call
from probgen.mc.mcmc import hmc_proposal, mala_proposal, mh_accept, rw_proposal
from probgen.mc.posterior import latent_sites
from probgen.mc.resampling import check_ess_threshold, check_scheme, ess, log_mean_exp, maybe_resample
from probgen.core.keys import particle_keys

MOVES = ("rwmh", "mala", "hmc")
# Acceptance rates the adaptive step size steers to: near-optimal for HMC (Beskos et al. 2013),
# MALA (Roberts & Rosenthal 1998) and the random walk (Roberts, Gelman & Gilks 1997).
TARGET_ACCEPTANCE_RATES = {"hmc": 0.65, "mala": 0.57, "rwmh": 0.234}
FIXED_STEP_SIZE = 0.1  # the step size of fixed moves (adapt=False) when none is given
_STEP_SIZE_GAIN = 1.0  # the log step size moves by (acceptance - target) per stage


class TemperingTarget(NamedTuple):
    """A tempered target given by plain log densities on a position pytree.

    Tempered SMC samples ``exp(log_prior(position) + beta * log_likelihood(position))`` from
    ``beta = 0`` to ``1``; pass it where the model goes, with initial particles drawn from
    the prior (the normalized density ``exp(log_prior)``): its log evidence is then
    ``log ∫ exp(log_prior + log_likelihood)``.

    Attributes:
      log_prior: ``position -> scalar``, the normalized log prior density.
      log_likelihood: ``position -> scalar``, the tempered factor.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> target = pg.mc.TemperingTarget(lambda z: -0.5 * jnp.sum(z**2) - jnp.log(2 * jnp.pi),
        ...                                lambda z: -0.5 * jnp.sum((z - 1.0) ** 2))
        >>> particles = jax.random.normal(jax.random.key(0), (500, 2))
        >>> result = pg.mc.tempered_smc(jax.random.key(1), target, num_particles=500, particles=particles)
        >>> exact = -jnp.log(2.0) - 0.5   # ∫ N(z; 0, I) exp(-|z - 1|^2 / 2) dz = exp(-1/2) / 2
        >>> result.final.position.shape, bool(abs(result.log_evidence - exact) < 0.1)
        ((500, 2), True)
    """

    log_prior: Callable[[Any], jax.Array]
    log_likelihood: Callable[[Any], jax.Array]


class TemperedState(NamedTuple):
    """Particles of tempered SMC.

    Attributes:
      position: where the particles move, leading particle axis: for a model, a
        ``ChoiceMap`` of its latent choices in unconstrained coordinates; for a
        :class:`TemperingTarget`, its own position pytree.
      latents: for a model, its latent choices in the model's own (constrained)
        coordinates, a ``ChoiceMap`` with a leading particle axis (what the posterior is
        read from); None for a :class:`TemperingTarget`.
      log_likelihood: ``(N,)`` ``log p(x | z)`` of each particle.
      log_weights: ``(N,)``; ``log_mean_exp`` of them is the running ``log Z_hat``.
      log_evidence: the running log-evidence estimate.
      beta: the current inverse temperature in ``[0, 1]``.
      step: how many tempering steps were taken.
      step_size: the step size the next stage's moves use.
      inverse_mass_matrix: ``(d,)``, the diagonal inverse mass matrix over the flattened
        position that the last stage's moves used (ones for fixed moves).
    """

    position: Any
    latents: ChoiceMap | None
    log_likelihood: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    beta: jax.Array
    step: jax.Array
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class TemperedInfo(NamedTuple):
    """Diagnostics of one tempering step.

    Attributes:
      beta: the new inverse temperature.
      ess: effective sample size of the reweighted particles, before resampling.
      acceptance_rate: mean acceptance probability of the MCMC moves (0 without moves).
      step_size: the step size the moves used.
      inverse_mass_matrix: ``(d,)``, the diagonal inverse mass matrix the moves used.
    """

    beta: jax.Array
    ess: jax.Array
    acceptance_rate: jax.Array
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class TemperedResult(NamedTuple):
    """What :func:`tempered_smc` returns.

    Attributes:
      log_evidence: the log-evidence estimate.
      final: the last :class:`TemperedState`; a model's posterior particles are
        ``final.latents`` (model coordinates), a :class:`TemperingTarget`'s ``final.position``.
      num_steps: the number of tempering steps taken.
      betas, acceptance_rates, step_sizes: ``(max_steps,)``, each step's inverse
        temperature, mean acceptance rate and step size (NaN past ``num_steps``).
    """

    log_evidence: jax.Array
    final: TemperedState
    num_steps: jax.Array
    betas: jax.Array
    acceptance_rates: jax.Array
    step_sizes: jax.Array


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


# -- the target: a model in unconstrained coordinates, or plain log densities ----------------------


class _Target(NamedTuple):
    """What the kernel needs of a target.

    ``evaluate(position) -> (log_prior, log_likelihood, latents)`` for one particle;
    ``positions(particles) -> positions`` checks the initial particles and maps them to the
    coordinates the moves use; ``dtype`` is that of the log densities (None: the positions').
    """

    evaluate: Callable
    positions: Callable
    dtype: Any


def _model_target(model: GenerativeFunction, observations, model_args: tuple, num_particles: int,
                  where: str) -> _Target:
    observations = as_choicemap(observations)
    latent_addresses, shape, dtype = latent_sites(model, observations, model_args, where)
    latents_selection = select(*latent_addresses)
    observed_selection = latents_selection.complement()

    def evaluate(position: ChoiceMap):
        # One pass: the trace's score is the density of the unconstrained latents (Jacobians
        # included) and the observations; the observed sites' scores are the likelihood.
        trace = assess_unconstrained(model, position.merge(observations), model_args, latents_selection)
        log_likelihood = model.project(trace, observed_selection)
        return trace.score - log_likelihood, log_likelihood, trace.choices.filter(latents_selection)

    def positions(particles) -> ChoiceMap:
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

        def unconstrain(values):
            choices = to_unconstrained(model, values.merge(observations), model_args, latents_selection)
            return choices.filter(latents_selection)

        return jax.vmap(unconstrain)(ChoiceMap(latents))

    return _Target(evaluate, positions, dtype)


def _density_target(target: TemperingTarget, num_particles: int, where: str) -> _Target:
    for name in TemperingTarget._fields:
        if not callable(getattr(target, name)):
            raise ArgumentError(f"{where}: target.{name} must be a function of the position, "
                                f"got {type(getattr(target, name)).__name__}")

    def evaluate(position):
        values = []
        for name in TemperingTarget._fields:
            value = getattr(target, name)(position)
            if jnp.shape(value) != ():
                raise ArgumentError(f"{where}: target.{name} must return a scalar, got shape {jnp.shape(value)}")
            values.append(value)
        return values[0], values[1], None

    def positions(particles):
        leaves = jax.tree.leaves(particles)
        if not leaves:
            raise ArgumentError(f"{where}.init: particles must be a non-empty pytree of arrays "
                                "(a leading particle axis), drawn from the prior")
        for leaf in leaves:
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != num_particles:
                raise ConstraintError(f"{where}.init: every leaf of particles needs a leading axis of size "
                                      f"num_particles={num_particles}, got a leaf of shape {jnp.shape(leaf)}")
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ArgumentError(f"{where}.init: particles must be floating arrays (the moves need "
                                    f"continuous positions), got {jnp.result_type(leaf)}")
        return jax.tree.map(jnp.asarray, particles)

    return _Target(evaluate, positions, None)


def _as_target(target, observations, model_args: tuple, num_particles: int, where: str) -> _Target:
    if isinstance(target, TemperingTarget):
        if observations is not None or model_args:
            raise ArgumentError(
                f"{where}: observations and model arguments go with a model; a TemperingTarget's log "
                "densities take the position only (close over the data instead)")
        return _density_target(target, num_particles, where)
    if isinstance(target, GenerativeFunction):
        return _model_target(target, observations, model_args, num_particles, where)
    raise ArgumentError(f"{where}: model must be a generative function (@pg.gen) or a "
                        f"pg.mc.TemperingTarget(log_prior, log_likelihood), got {type(target).__name__}")


# -- settings --------------------------------------------------------------------------------------


class _Settings(NamedTuple):
    num_particles: int
    target_ess: float
    move: str
    num_leapfrog_steps: int
    num_mcmc_steps: int
    scheme: str
    adapt: bool
    target_acceptance_rate: float


def _check_settings(where, num_particles, target_ess, move, step_size, num_leapfrog_steps, num_mcmc_steps,
                    scheme, adapt, target_acceptance_rate) -> _Settings:
    num_particles = check_num_particles(num_particles, where)
    check_ess_threshold(target_ess, where, "target_ess", allow_zero=False)
    check_scheme(scheme, where)
    if not isinstance(move, str) or move not in MOVES:
        raise SettingError(f"{where}: unknown move {move!r}; choose one of {', '.join(MOVES)}")
    num_mcmc_steps = static_int(num_mcmc_steps, "num_mcmc_steps", where, minimum=0)
    num_leapfrog_steps = static_int(num_leapfrog_steps, "num_leapfrog_steps", where)
    if step_size is not None and isinstance(step_size, (int, float)) and not step_size > 0:
        raise SettingError(f"{where}: step_size must be positive, got {step_size!r}")
    if not isinstance(adapt, (bool, np.bool_)):
        raise SettingError(f"{where}: adapt must be True or False, got {adapt!r}")
    if target_acceptance_rate is None:
        target_acceptance_rate = TARGET_ACCEPTANCE_RATES[move]
    if not isinstance(target_acceptance_rate, (int, float)) or not 0.0 < target_acceptance_rate < 1.0:
        raise SettingError(f"{where}: target_acceptance_rate must be a number in (0, 1), "
                           f"got {target_acceptance_rate!r}")
    return _Settings(num_particles, float(target_ess), move, num_leapfrog_steps, num_mcmc_steps, scheme, bool(adapt),
                     float(target_acceptance_rate))


def _initial_step_size(move: str, dimension: int) -> float:
    """A step size for a whitened ``dimension``-dimensional Gaussian: the optimal scalings
    ``d^(-1/4)`` (HMC), a proposal s.d. ``1.65 d^(-1/3)`` (MALA, whose step is half the
    proposal variance) and ``2.38 / sqrt(d)`` (random walk)."""
    if move == "hmc":
        return dimension ** -0.25
    if move == "mala":
        return 0.5 * 1.65**2 * dimension ** (-2.0 / 3.0)
    return 2.38 / dimension**0.5


def _cloud_variance(position, num_particles: int) -> jax.Array:
    """Per-coordinate variance of equally weighted particles (flattened positions).

    Plus a millionth of each coordinate's second moment: a coordinate whose particles all
    agree (a collapsed cloud) keeps a step proportionate to its values instead of freezing,
    and the regularization is free of units (a plain target's coordinates have any scale).
    """
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(position)
    mean = _pairwise_sum(flat) / num_particles
    variance = _pairwise_sum((flat - mean) ** 2) / num_particles
    return variance + 1e-6 * (variance + mean**2)


def _whitened_move(key, position, logdensity: Callable, step_size, inverse_mass_matrix, move: str,
                   num_leapfrog_steps: int):
    """One MH move of ``position`` with a diagonal inverse mass matrix (``(z, MCMCInfo)``).

    The proposal runs on ``y = (z - z0) / sqrt(m)`` from ``y = 0``, where a unit mass is
    mass ``diag(1 / m)`` on ``z`` (the Jacobian is constant and cancels), and the accept
    step keeps the old position bit for bit on a rejection.
    """
    flat, unravel = ravel_pytree(position)
    scale = jnp.sqrt(inverse_mass_matrix).astype(flat.dtype)
    step_size = jnp.asarray(step_size, flat.dtype)

    def to_position(y):
        return unravel(flat + scale * y)

    def whitened(y):
        return logdensity(to_position(y))

    k_prop, k_accept = jax.random.split(key)
    origin = jnp.zeros_like(flat)
    if move == "rwmh":
        proposed = rw_proposal(k_prop, origin, step_size)
        log_alpha = whitened(proposed) - whitened(origin)
    elif move == "mala":
        proposed, log_alpha = mala_proposal(k_prop, origin, whitened, step_size)
    else:
        proposed, log_alpha = hmc_proposal(k_prop, origin, whitened, step_size, num_leapfrog_steps)
    return mh_accept(k_accept, log_alpha, to_position(proposed), position)


# -- the kernel ------------------------------------------------------------------------------------


def tempered_smc_kernel(model, observations=None, *model_args, num_particles: int, target_ess: float = 0.5,
                        move: str = "hmc", step_size: float | None = None, num_leapfrog_steps: int = 10,
                        num_mcmc_steps: int = 5, scheme: str = "systematic", adapt: bool = True,
                        target_acceptance_rate: float | None = None) -> Kernel:
    """Adaptive tempered SMC as a kernel: ``init(particles)``, ``step(key, state)``.

    Args:
      model: a generative function whose latent sites are continuous (they move in
        unconstrained coordinates), or a :class:`TemperingTarget` of plain log densities.
      observations: a model's ``ChoiceMap``/dict of observed choices (none for a
        :class:`TemperingTarget`).
      *model_args: the model's arguments.
      num_particles: a static positive int.
      target_ess: fraction in ``(0, 1]`` of ``N`` the ESS keeps at each step.
      move: MCMC rejuvenation, ``"hmc"``, ``"mala"`` or ``"rwmh"`` (``step_size`` is the
        walk's scale).
      step_size: the moves' (initial, when adapting) step size; None picks a start scaled
        to the dimension ``d`` for a whitened Gaussian (``d^(-1/4)`` for HMC) when
        adapting, and 0.1 for fixed moves.
      num_leapfrog_steps: leapfrog steps per HMC move.
      num_mcmc_steps: moves per particle per tempering step.
      scheme: resampling scheme.
      adapt: adapt the moves (default): before each stage's moves the diagonal inverse mass
        matrix is the per-coordinate variance of the resampled particles, and the step size
        is multiplied by ``exp(acceptance - target_acceptance_rate)`` after each stage.
        ``False``: fixed ``step_size`` and unit mass.
      target_acceptance_rate: where the step size steers the mean acceptance; None is 0.65
        for HMC, 0.57 for MALA and 0.234 for the random walk.

    Returns:
      A kernel: ``init(particles) -> TemperedState`` at ``beta = 0``, where ``particles``
      are drawn from the prior with a leading axis of ``num_particles``: for a model, a
      ``ChoiceMap``/dict holding every latent choice in the model's coordinates (e.g. the
      choices of ``model.simulate`` vmapped over keys; other addresses are ignored); for a
      :class:`TemperingTarget`, a position pytree. ``step(key, state) -> (state,
      TemperedInfo)``. A model's posterior particles are ``state.latents``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model():
        ...     z = pg.sample("z", pg.Normal(jnp.zeros(2), 1.0))
        ...     return pg.sample("x", pg.Normal(z, 0.5))
        >>> kernel = pg.mc.tempered_smc_kernel(model, {"x": jnp.ones(2)}, num_particles=100)
        >>> prior = jax.vmap(model.simulate)(jax.random.split(jax.random.key(0), 100))
        >>> state, info = kernel.step(jax.random.key(1), kernel.init(prior.choices))
        >>> bool(info.beta > 0), state.latents["z"].shape, info.inverse_mass_matrix.shape
        (True, (100, 2), (2,))
    """
    where = "tempered_smc"
    settings = _check_settings(where, num_particles, target_ess, move, step_size, num_leapfrog_steps,
                               num_mcmc_steps, scheme, adapt, target_acceptance_rate)
    target = _as_target(model, observations, tuple(model_args), settings.num_particles, where)
    return _kernel(target, settings, step_size)


def _kernel(target: _Target, settings: _Settings, step_size) -> Kernel:
    (num_particles, target_ess, move, num_leapfrog_steps, num_mcmc_steps, scheme, adapt,
     target_acceptance_rate) = settings

    def init(particles) -> TemperedState:
        position = target.positions(particles)
        first = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], position))[0]
        flat_dtype, dimension = first.dtype, first.shape[0]
        log_prior, log_lik, latents = jax.vmap(target.evaluate)(position)
        dtype = target.dtype if target.dtype is not None else jnp.result_type(log_prior, log_lik, flat_dtype)
        if step_size is None:
            start = _initial_step_size(move, dimension) if adapt else FIXED_STEP_SIZE
        else:
            start = step_size
        if adapt:
            inverse_mass_matrix = _cloud_variance(position, num_particles).astype(flat_dtype)
        else:
            inverse_mass_matrix = jnp.ones((dimension,), flat_dtype)
        zero = jnp.zeros((), dtype)
        return TemperedState(position, latents, log_lik.astype(dtype), jnp.zeros((num_particles,), dtype), zero,
                             zero, jnp.zeros((), jnp.int32), jnp.asarray(start, dtype), inverse_mass_matrix)

    def move_one(key, position, beta, step_size, inverse_mass_matrix):
        def logdensity(z):
            log_prior, log_lik, _ = target.evaluate(z)
            return log_prior + beta.astype(log_lik.dtype) * log_lik

        def one_move(z, k):
            z, info = _whitened_move(k, z, logdensity, step_size, inverse_mass_matrix, move, num_leapfrog_steps)
            return z, info.acceptance_rate.astype(beta.dtype)

        position, rates = jax.lax.scan(one_move, position, jax.random.split(key, num_mcmc_steps))
        _, log_lik, latents = target.evaluate(position)
        return position, latents, log_lik.astype(beta.dtype), jnp.mean(rates)

    def step(key, state: TemperedState):
        k_resample, k_move = jax.random.split(key)
        beta = next_beta(state.beta, state.log_likelihood, target_ess)
        delta = beta - state.beta
        increments = jnp.where(delta > 0, delta * state.log_likelihood, 0.0)
        log_weights = state.log_weights + increments
        ess_now = ess(log_weights)
        (position, latents, log_lik), log_weights, _, _ = maybe_resample(
            k_resample, (state.position, state.latents, state.log_likelihood), log_weights, 1.0, scheme
        )
        inverse_mass_matrix = state.inverse_mass_matrix
        if adapt:
            inverse_mass_matrix = _cloud_variance(position, num_particles).astype(inverse_mass_matrix.dtype)
        step_size = next_step_size = state.step_size
        if num_mcmc_steps > 0:
            keys = particle_keys(k_move, num_particles)
            position, latents, log_lik, rates = jax.vmap(
                lambda k, z: move_one(k, z, beta, step_size, inverse_mass_matrix))(keys, position)
            acceptance_rate = _pairwise_sum(rates) / num_particles
            if adapt:
                # A Robbins-Monro step in log scale towards the target acceptance: the next stage's step size.
                next_step_size = step_size * jnp.exp(_STEP_SIZE_GAIN * (acceptance_rate - target_acceptance_rate))
        else:
            acceptance_rate = jnp.zeros((), state.beta.dtype)
        new_state = TemperedState(position, latents, log_lik, log_weights, log_mean_exp(log_weights), beta,
                                  state.step + 1, next_step_size, inverse_mass_matrix)
        return new_state, TemperedInfo(beta, ess_now, acceptance_rate, step_size, inverse_mass_matrix)

    return Kernel(init=init, step=step)


# -- the one-call driver ---------------------------------------------------------------------------


def tempered_smc(key: jax.Array, model, observations=None, *model_args, num_particles: int,
                 target_ess: float = 0.5, move: str = "hmc", step_size: float | None = None,
                 num_leapfrog_steps: int = 10, num_mcmc_steps: int = 5, scheme: str = "systematic",
                 adapt: bool = True, target_acceptance_rate: float | None = None, max_steps: int = 200,
                 particles=None) -> TemperedResult:
    """Run adaptive tempered SMC from the prior (``beta = 0``) until ``beta = 1``, in one call.

    Drives :func:`tempered_smc_kernel` with a ``lax.while_loop``. Arguments are those of
    :func:`tempered_smc_kernel`, plus ``key``, ``max_steps`` (a cap on the number of
    tempering steps) and ``particles``: the initial particles, drawn from the prior (a
    model's are drawn by default; a :class:`TemperingTarget` needs them).

    The call compiles itself: the first call with a model (the same object) and settings
    compiles one ``jax.jit`` program, and later calls with new keys, observations, model
    arguments, step sizes or particles of the same shapes reuse it (see
    :func:`probgen.core.compiled.compiled_call`; Python ints among the model arguments are
    compile-time constants). Under an outer ``jax.jit`` or ``jax.vmap`` it is traced into
    the caller's program.

    Returns:
      A :class:`TemperedResult` (``log_evidence``, ``final`` particles at the posterior,
      ``num_steps``, and each step's ``betas``, ``acceptance_rates`` and ``step_sizes``).
      A model's posterior particles are ``result.final.latents``, in its own coordinates
      (a positive latent stays positive); ``result.final.position`` holds them unconstrained.

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
    where = "tempered_smc"
    settings = _check_settings(where, num_particles, target_ess, move, step_size, num_leapfrog_steps,
                               num_mcmc_steps, scheme, adapt, target_acceptance_rate)
    max_steps = static_int(max_steps, "max_steps", where)
    if isinstance(model, TemperingTarget) and particles is None:
        raise ArgumentError(f"{where}: a TemperingTarget needs particles drawn from its prior "
                            f"(a leading axis of num_particles={settings.num_particles})")
    return compiled_call(_tempered_program, (model, settings, max_steps, particles is None),
                         key, observations, tuple(model_args), step_size, particles)


def _tempered_program(model, settings: _Settings, max_steps: int, draw_prior: bool) -> Callable:
    """The body of :func:`tempered_smc` for one target and settings."""
    where = "tempered_smc"

    def run(key, observations, model_args, step_size, particles):
        target = _as_target(model, observations, model_args, settings.num_particles, where)
        kernel = _kernel(target, settings, step_size)
        k_init, k_run = jax.random.split(key)
        if draw_prior:
            observed = as_choicemap(observations)
            keys = particle_keys(k_init, settings.num_particles)
            particles = jax.vmap(lambda k: model.generate(k, observed, *model_args)[0].choices)(keys)
        state = kernel.init(particles)
        nan = jnp.full((max_steps,), jnp.nan, state.beta.dtype)

        def cond(carry):
            s, _ = carry
            return (s.beta < 1.0) & (s.step < max_steps)

        def body(carry):
            s, history = carry
            s, info = kernel.step(jax.random.fold_in(k_run, s.step), s)
            history = [h.at[s.step - 1].set(v.astype(h.dtype))
                       for h, v in zip(history, (info.beta, info.acceptance_rate, info.step_size))]
            return s, history

        final, (betas, rates, step_sizes) = jax.lax.while_loop(cond, body, (state, [nan, nan, nan]))
        return TemperedResult(final.log_evidence, final, final.step, betas, rates, step_sizes)

    return run
