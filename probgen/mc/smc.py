"""Sequential Monte Carlo over ``pg.scan`` state-space models (particle filters).

The SMC kernel's ``step`` advances every particle one time step of the scan model:
resample when the ESS is low (:func:`pg.mc.maybe_resample`), propose the step's
latents (from the model's own transition: bootstrap; or from a proposal GF), weight with
the step's log density, then optionally rejuvenate with an MCMC kernel on the step's
trace. Particles live in arrays with a leading particle axis; one ``lax.scan`` runs time.

Reference: Doucet & Johansen, "A tutorial on particle filtering and smoothing", 2009.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address
from probgen.core.combinators import Scan
from probgen.core.gfi import GenerativeFunction
from probgen.kernels import Kernel, run
from probgen.mc.checks import check_gf, check_num_particles, check_proposal_covers
from probgen.mc.resampling import check_ess_threshold, check_scheme, ess, log_mean_exp, maybe_resample


class ParticleState(NamedTuple):
    """The state of a particle filter between time steps.

    Attributes:
      carry: the per-particle scan carry, leading axis ``N``.
      choices: the latest step's choices, leading axis ``N``.
      log_weights: ``(N,)`` unnormalized log weights; ``log_mean_exp`` of them is the
        running log-evidence estimate.
      log_evidence: ``log Z_hat`` of the observations so far.
      step: the index of the next time step.
    """

    carry: Any
    choices: ChoiceMap
    log_weights: jax.Array
    log_evidence: jax.Array
    step: jax.Array


class SMCInfo(NamedTuple):
    """Diagnostics of one SMC step.

    Attributes:
      ess: effective sample size of the weights before the resampling decision.
      resampled: whether this step resampled.
      ancestors: ``(N,)`` ancestor indices (``arange(N)`` when not resampled).
      acceptance: mean acceptance probability of the rejuvenation moves (0 without).
    """

    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array
    acceptance: jax.Array


class SMCResult(NamedTuple):
    """What :func:`smc` returns.

    Attributes:
      log_evidence: ``log Z_hat`` of all observations.
      final: the final :class:`ParticleState`.
      states: the state after every step (leading time axis): ``states.choices[t]`` and
        ``states.log_weights[t]`` are the weighted filtering particles at time ``t``.
      infos: :class:`SMCInfo` per step (leading time axis).
    """

    log_evidence: jax.Array
    final: ParticleState
    states: ParticleState
    infos: SMCInfo


def _num_steps(model: Scan, xs) -> int:
    leaves = jax.tree.leaves(xs)
    if leaves:
        return int(jnp.shape(leaves[0])[0])
    if model.length is None:
        raise ValueError(f"particle_filter: {model.__name__} has no xs and no length")
    return model.length


def _at(tree, t):
    return jax.tree.map(lambda v: jax.lax.dynamic_index_in_dim(v, t, 0, keepdims=False), tree)


def particle_filter(model: Scan, observations, init_carry, xs=None, *, num_particles: int,
                    proposal: GenerativeFunction | None = None, proposal_args: tuple = (),
                    ess_threshold: float = 0.5, scheme: str = "systematic",
                    rejuvenation: Kernel | None = None, num_rejuvenation_steps: int = 1) -> Kernel:
    """An SMC kernel over a ``pg.scan`` model: each ``step`` filters one time step.

    Args:
      model: a ``pg.scan(kernel_gf)`` model; ``kernel_gf(carry, x) -> (carry, y)``.
      observations: a ``ChoiceMap``/dict of the kernel's observed addresses, each with a
        leading time axis (as in the scan's own choices).
      init_carry: the scan's initial carry (shared by all particles).
      xs: the scan's per-step inputs (leading time axis) or None.
      num_particles: a static positive int.
      proposal: optional proposal GF called as
        ``proposal(carry, x_t, observations_t, *proposal_args)``; it must propose every
        latent address of the kernel. Default: bootstrap (the model's transition).
      proposal_args: extra proposal arguments (parameters), shared over time.
      ess_threshold: resample when ESS < ``ess_threshold * N``; in ``(0, 1]``, 1.0 = always.
      scheme: resampling scheme (``"multinomial"``, ``"stratified"``, ``"systematic"``,
        ``"residual"``).
      rejuvenation: optional MCMC kernel on a step trace (``pg.mc.mh``, ``mala``, ``hmc``,
        ``regenerate``) applied to every particle after weighting; it leaves the
        step's conditional target invariant, so the weights stay.
      num_rejuvenation_steps: how many rejuvenation moves per time step.

    Returns:
      A kernel: ``init() -> ParticleState``, ``step(key, state) -> (state, SMCInfo)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def step(z, _):
        ...     z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
        ...     pg.sample("y", pg.Normal(z, 0.5))
        ...     return z, None
        >>> model = pg.scan(step, length=20)
        >>> pf = pg.mc.particle_filter(model, {"y": jnp.zeros(20)}, 0.0, num_particles=100)
        >>> state, info = pg.run(pf, jax.random.key(0), pf.init(), 20)
        >>> state.log_weights.shape
        (100,)
    """
    where = "particle_filter"
    if not isinstance(model, Scan):
        raise TypeError(
            f"{where}: model must be a pg.scan(...) state-space model, got {type(model).__name__}; "
            "for a static model use pg.mc.importance_sampling or pg.mc.tempered_smc"
        )
    check_num_particles(num_particles, where)
    check_ess_threshold(ess_threshold, where)
    check_scheme(scheme, where)
    if rejuvenation is not None and not isinstance(rejuvenation, Kernel):
        raise TypeError(f"{where}: rejuvenation must be a pg.Kernel over traces (e.g. pg.mc.mh(...))")
    if not isinstance(num_rejuvenation_steps, int) or num_rejuvenation_steps < 1:
        raise ValueError(f"{where}: num_rejuvenation_steps must be a positive int, got {num_rejuvenation_steps!r}")
    step_gf = model.kernel
    observations = as_choicemap(observations)
    num_steps = _num_steps(model, xs)
    for address, value in observations.to_dict().items():
        if jnp.ndim(value) == 0 or jnp.shape(value)[0] != num_steps:
            raise ValueError(
                f"{where}: observations at {format_address(address)!r} need a leading time axis of "
                f"size {num_steps}, got shape {jnp.shape(value)}"
            )
    proposal_args = tuple(proposal_args)
    init_carry = jax.tree.map(jnp.asarray, init_carry)

    def propose_one(key, carry, x_t, obs_t):
        if proposal is None:
            return step_gf.generate(key, obs_t, carry, x_t)
        k_prop, k_model = jax.random.split(key)
        proposed = proposal.simulate(k_prop, carry, x_t, obs_t, *proposal_args)
        trace, log_p = step_gf.generate(k_model, proposed.choices.merge(obs_t), carry, x_t)
        return trace, log_p - proposed.score

    # Trace-time checks and the layout of one step's choices.
    key0 = jax.random.key(0)
    x0, obs0 = _at(xs, 0), _at(observations, 0)
    model_shape = jax.eval_shape(lambda k: step_gf.generate(k, obs0, init_carry, x0)[0], key0)
    if proposal is not None:
        check_gf(proposal, "proposal", where)
        proposal_shape = jax.eval_shape(
            lambda k: proposal.simulate(k, init_carry, x0, obs0, *proposal_args).choices, key0
        )
        check_proposal_covers(proposal_shape, model_shape.choices, obs0, step_gf.__name__,
                              proposal.__name__, where)
    if not (isinstance(model_shape.retval, tuple) and len(model_shape.retval) == 2):
        raise TypeError(f"{where}: the kernel of {model.__name__} must return a (carry, output) pair")

    def init() -> ParticleState:
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (num_particles,) + jnp.shape(c)), init_carry)
        choices = jax.tree.map(lambda s: jnp.zeros((num_particles,) + s.shape, s.dtype), model_shape.choices)
        zero = jnp.zeros((), jnp.float32)
        return ParticleState(carry, choices, jnp.zeros((num_particles,), jnp.float32), zero,
                             jnp.zeros((), jnp.int32))

    def step(key, state: ParticleState):
        k_resample, k_propose, k_rejuvenate = jax.random.split(key, 3)
        ess_before = ess(state.log_weights)
        # Only the carry is resampled: the step's choices are replaced right below.
        carry, log_weights, resampled, ancestors = maybe_resample(
            k_resample, state.carry, state.log_weights, ess_threshold, scheme
        )
        x_t, obs_t = _at(xs, state.step), _at(observations, state.step)
        keys = jax.random.split(k_propose, num_particles)
        traces, log_increments = jax.vmap(lambda k, c: propose_one(k, c, x_t, obs_t))(keys, carry)
        acceptance = jnp.zeros(())
        if rejuvenation is not None:
            def rejuvenate(k, trace):
                trace, info = run(rejuvenation, k, trace, num_rejuvenation_steps)
                return trace, jnp.asarray(getattr(info, "acceptance_prob", jnp.nan), jnp.float32)

            keys = jax.random.split(k_rejuvenate, num_particles)
            traces, accs = jax.vmap(rejuvenate)(keys, traces)
            acceptance = jnp.mean(accs)
        log_weights = log_weights + log_increments
        new_state = ParticleState(
            carry=traces.retval[0], choices=traces.choices, log_weights=log_weights,
            log_evidence=log_mean_exp(log_weights), step=state.step + 1,
        )
        return new_state, SMCInfo(ess_before, resampled, ancestors, acceptance)

    return Kernel(init=init, step=step)


def smc(key: jax.Array, model: Scan, observations, init_carry, xs=None, *, num_particles: int,
        proposal: GenerativeFunction | None = None, proposal_args: tuple = (),
        ess_threshold: float = 0.5, scheme: str = "systematic", rejuvenation: Kernel | None = None,
        num_rejuvenation_steps: int = 1) -> SMCResult:
    """Run :func:`particle_filter` over every time step (one ``lax.scan``).

    Arguments are those of :func:`particle_filter`, plus the PRNG ``key``.

    Returns:
      An :class:`SMCResult`: ``log_evidence``, ``final`` state, per-step ``states``
      (weighted filtering particles) and ``infos``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def step(z, _):
        ...     z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
        ...     pg.sample("y", pg.Normal(z, 0.5))
        ...     return z, None
        >>> result = pg.mc.smc(jax.random.key(0), pg.scan(step, length=10), {"y": jnp.zeros(10)},
        ...                    0.0, num_particles=200)
        >>> result.states.choices["z"].shape
        (10, 200)
    """
    kernel = particle_filter(
        model, observations, init_carry, xs, num_particles=num_particles, proposal=proposal,
        proposal_args=proposal_args, ess_threshold=ess_threshold, scheme=scheme,
        rejuvenation=rejuvenation, num_rejuvenation_steps=num_rejuvenation_steps,
    )
    num_steps = _num_steps(model, xs)
    final, (states, infos) = run(kernel, key, kernel.init(), num_steps, keep="all")
    return SMCResult(final.log_evidence, final, states, infos)
