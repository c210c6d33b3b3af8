"""Sequential Monte Carlo over ``pg.scan`` state-space models (particle filters).

The SMC kernel (:func:`particle_filter`) starts every particle from the scan's initial
carry (``init(init_carry)``); each ``step`` advances every particle one time step of the
scan model: resample when the ESS is low (:func:`pg.mc.maybe_resample`), propose the step's
latents (from the model's own transition: bootstrap; or from a proposal GF), weight with
the step's log density, then optionally rejuvenate with an MCMC kernel on the step's
trace. Particles live in arrays with a leading particle axis; one ``lax.scan`` runs time.
Every float the filter creates takes the dtype of the model's log densities (float64
under ``jax_enable_x64``), and each particle draws from its own key, so a sharded run
follows the same random path as an unsharded one.

Reference: Doucet & Johansen, "A tutorial on particle filtering and smoothing", 2009.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probgen.core import handlers
from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, as_choicemap, format_address
from probgen.core.combinators import Scan
from probgen.core.compiled import compiled_call
from probgen.core.errors import ArgumentError, ConstraintError, SettingError
from probgen.core.gen import placeholder_like
from probgen.core.gfi import GenerativeFunction
from probgen.core.validation import check
from probgen.kernels import Kernel, run
from probgen.mc.checks import check_gf, check_num_particles, check_proposal_covers, concrete_value
from probgen.mc.resampling import check_ess_threshold, check_scheme, ess, log_mean_exp, maybe_resample
from probgen.core.keys import particle_keys


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
      acceptance_rate: mean acceptance probability of the rejuvenation moves (0 without).
    """

    ess: jax.Array
    resampled: jax.Array
    ancestors: jax.Array
    acceptance_rate: jax.Array


class SMCResult(NamedTuple):
    """What :func:`smc` returns.

    Attributes:
      log_evidence: ``log Z_hat`` of all observations.
      final: the final :class:`ParticleState`.
      states: with ``keep="all"``, the state after every step (leading time axis):
        ``states.choices[t]`` and ``states.log_weights[t]`` are the weighted filtering
        particles at time ``t``; ``None`` with ``keep="last"``.
      infos: :class:`SMCInfo` per step (leading time axis) with ``keep="all"``; the last
        step's with ``keep="last"``.
    """

    log_evidence: jax.Array
    final: ParticleState
    states: ParticleState | None
    infos: SMCInfo


def _at(tree, t):
    return jax.tree.map(lambda v: jax.lax.dynamic_index_in_dim(v, t, 0, keepdims=False), tree)


def _check_settings(model, num_particles, proposal, ess_threshold, scheme, rejuvenation, num_rejuvenation_steps,
                    where: str) -> tuple[int, int]:
    if not isinstance(model, Scan):
        raise ArgumentError(
            f"{where}: model must be a pg.scan(...) state-space model, got {type(model).__name__}; "
            "for a static model use pg.mc.importance_sampling or pg.mc.tempered_smc"
        )
    num_particles = check_num_particles(num_particles, where)
    if proposal is not None:
        check_gf(proposal, "proposal", where)
    check_ess_threshold(ess_threshold, where)
    check_scheme(scheme, where)
    if rejuvenation is not None and not isinstance(rejuvenation, Kernel):
        raise ArgumentError(f"{where}: rejuvenation must be a pg.Kernel over traces (e.g. pg.mc.mh(...)), "
                            f"got {type(rejuvenation).__name__}")
    return num_particles, static_int(num_rejuvenation_steps, "num_rejuvenation_steps", where)


def _check_observations(observations: ChoiceMap, num_steps: int, where: str) -> None:
    for address, value in observations.to_dict().items():
        if jnp.ndim(value) == 0 or jnp.shape(value)[0] != num_steps:
            raise ConstraintError(
                f"{where}: observations at {format_address(address)!r} need a leading time axis of "
                f"size {num_steps}, got shape {jnp.shape(value)}"
            )


def _check_missing(obs_mask, observations: ChoiceMap, num_steps: int, where: str) -> ChoiceMap | None:
    """``obs_mask`` as a choice map of booleans keyed like ``observations`` (None: all observed);
    a NaN observation that the mask does not mark missing is a ``ConstraintError`` when the
    values are known now (traced ones are checked at run time under ``pg.validate``)."""
    masks = _obs_mask(obs_mask, observations, num_steps, where)
    for address, value in observations.to_dict().items():
        values = concrete_value(value)
        mask = np.ones((), bool) if masks is None else concrete_value(masks[address])
        if values is None or mask is None or not np.issubdtype(values.dtype, np.floating):
            continue
        mask = mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
        bad = np.isnan(values) & mask
        if bad.any():
            steps = np.flatnonzero(bad.reshape(num_steps, -1).any(axis=1))
            raise ConstraintError(
                f"{where}: the observations at {format_address(address)!r} are NaN at step(s) "
                f"{', '.join(map(str, steps[:5]))}{', ...' if steps.size > 5 else ''}; mark missing "
                "observations with obs_mask (False where missing) instead"
            )
    return masks


def _obs_mask(obs_mask, observations: ChoiceMap, num_steps: int, where: str) -> ChoiceMap | None:
    """``obs_mask`` as a choice map of booleans keyed like ``observations`` (None: all observed)."""
    if obs_mask is None:
        return None
    per_address = as_choicemap(obs_mask) if isinstance(obs_mask, Mapping) else None
    if per_address is not None:
        unknown = [a for a in per_address.addresses() if a not in observations]
        if unknown:
            observed = ", ".join(format_address(a) for a in observations.addresses()) or "none"
            raise ConstraintError(f"{where}: obs_mask names {format_address(unknown[0])!r}, which is not an "
                                  f"observed address (observed: {observed})")
    masks = {}
    for address, value in observations.to_dict().items():
        if per_address is None:
            mask = obs_mask
        else:
            mask = per_address[address] if address in per_address else jnp.ones((num_steps,), bool)
        mask, value = jnp.asarray(mask), jnp.asarray(value)
        if mask.dtype != jnp.bool_:
            raise ArgumentError(f"{where}: obs_mask at {format_address(address)!r} must be boolean (True where "
                                f"observed), got dtype {mask.dtype}")
        if value.dtype == jnp.bool_:
            raise ArgumentError(f"{where}: the observations at {format_address(address)!r} are booleans, which "
                                "have no missing-value placeholder; give them as integers (0/1) to mask them")
        if mask.ndim == 0 or mask.shape != value.shape[: mask.ndim]:
            raise ConstraintError(
                f"{where}: obs_mask at {format_address(address)!r} must have shape ({num_steps},) or a leading "
                f"part of the observations' shape {value.shape}, got {mask.shape}")
        masks[address] = mask
    return ChoiceMap(masks)


def _drop_missing(obs_t: ChoiceMap, mask_t: ChoiceMap | None, step: jax.Array, where: str) -> ChoiceMap:
    """One step's observations with the masked-out entries replaced by placeholders (NaN or the
    integer minimum), which the step's ``generate`` draws from the model; under ``pg.validate``,
    a NaN left in an observed entry fails."""

    def one(address, value, mask):
        mask = jnp.reshape(mask, jnp.shape(mask) + (1,) * (jnp.ndim(value) - jnp.ndim(mask)))
        if jnp.issubdtype(value.dtype, jnp.floating):
            check(~jnp.any(jnp.isnan(value) & mask),
                  f"{where}: the observation at {format_address(address)!r} is NaN at step {{step}}; mark missing "
                  "observations with obs_mask (False where missing) instead", step=step)
        return value if mask_t is None else jnp.where(mask, value, placeholder_like(value))

    masks = mask_t.to_dict() if mask_t is not None else {}
    return ChoiceMap({a: one(a, v, masks.get(a, True)) for a, v in obs_t.to_dict().items()})


class _Imputing(GenerativeFunction):
    """``gf``, except that a placeholder given for a choice (a masked-out observation) counts as
    absent: it is drawn from ``gf`` and adds no weight (the mechanism of ``pg.switch`` branches)."""

    def __init__(self, gf: GenerativeFunction):
        self.gf = gf
        self.__name__ = gf.__name__

    def _run(self, key, constraints, args, mode):
        with handlers.placeholder_scope():
            return self.gf._run(key, constraints, args, mode)


def _proposer(step_gf: GenerativeFunction, proposal, proposal_args: tuple) -> Callable:
    """``propose(key, carry, x_t, obs_t) -> (step trace, log weight increment)`` of one particle."""

    def propose(key, carry, x_t, obs_t):
        if proposal is None:
            return step_gf.generate(key, obs_t, carry, x_t)
        k_prop, k_model = jax.random.split(key)
        proposed = proposal.simulate(k_prop, carry, x_t, obs_t, *proposal_args)
        trace, log_p = step_gf.generate(k_model, proposed.choices.merge(obs_t), carry, x_t)
        return trace, log_p - proposed.score

    return propose


def _step_layout(model: Scan, propose: Callable, proposal, proposal_args, init_carry, x0, obs0, where: str):
    """Trace-time checks of one step; returns its choices' layout, the weights' dtype and
    ``init_carry`` in the dtypes the step returns (so the time scan's carry types agree)."""
    step_gf, key = model.kernel, jax.random.key(0)
    if proposal is not None:
        proposed = jax.eval_shape(lambda k: proposal.simulate(k, init_carry, x0, obs0, *proposal_args).choices, key)
        model_choices = jax.eval_shape(lambda k: step_gf.generate(k, obs0, init_carry, x0)[0].choices, key)
        check_proposal_covers(proposed, model_choices, obs0, step_gf.__name__, proposal.__name__, where)
    trace, log_increment = jax.eval_shape(lambda k: propose(k, init_carry, x0, obs0), key)
    if not (isinstance(trace.retval, tuple) and len(trace.retval) == 2):
        raise ArgumentError(f"{where}: the kernel of {model.__name__} must return a (carry, output) pair")
    carry_out = trace.retval[0]
    if jax.tree.structure(carry_out) != jax.tree.structure(init_carry):
        raise ArgumentError(
            f"{where}: the kernel of {model.__name__} returns a carry of structure "
            f"{jax.tree.structure(carry_out)}, but init_carry has structure {jax.tree.structure(init_carry)}"
        )
    init_carry = jax.tree.map(lambda c, s: c.astype(s.dtype), init_carry, carry_out)
    return trace.choices, log_increment.dtype, init_carry


def _rejuvenate(rejuvenation: Kernel, num_moves: int, key: jax.Array, traces, dtype):
    """Move every particle's step trace ``num_moves`` times: ``(traces, mean acceptance rate)``."""

    def move_one(key, trace):
        trace, info = run(rejuvenation, key, trace, num_moves)
        return trace, jnp.asarray(getattr(info, "acceptance_rate", jnp.nan), dtype)

    num_particles = jax.tree.leaves(traces)[0].shape[0]
    traces, rates = jax.vmap(move_one)(particle_keys(key, num_particles), traces)
    return traces, jnp.mean(rates)


def _check_within_horizon(step: jax.Array, num_steps: int, where: str) -> jax.Array:
    """Whether ``step`` indexes an observation: a ``SettingError`` now when ``step`` is known,
    a failed check under ``pg.validate`` when it is traced."""
    known = concrete_value(step)
    if known is not None and not 0 <= int(known) < num_steps:
        raise SettingError(
            f"{where}: step index {int(known)} is past the horizon: the observations have {num_steps} time "
            f"steps (0..{num_steps - 1}); drive the filter for at most {num_steps} steps"
        )
    within = (step >= 0) & (step < num_steps)
    check(within, f"{where}: step index {{step}} is past the horizon: the observations have {num_steps} "
                  f"time steps; drive the filter for at most {num_steps} steps", step=step)
    return within


def particle_filter(model: Scan, observations, *, xs=None, num_particles: int,
                    proposal: GenerativeFunction | None = None, proposal_args: tuple = (),
                    ess_threshold: float = 0.5, scheme: str = "systematic",
                    rejuvenation: Kernel | None = None, num_rejuvenation_steps: int = 1,
                    obs_mask=None) -> Kernel:
    """An SMC kernel over a ``pg.scan`` model: each ``step`` filters one time step.

    Args:
      model: a ``pg.scan(kernel_gf)`` model; ``kernel_gf(carry, x) -> (carry, y)``.
      observations: a ``ChoiceMap``/dict of the kernel's observed addresses, each with a
        leading time axis (as in the scan's own choices).
      xs: the scan's per-step inputs (leading time axis) or None.
      num_particles: a static positive int.
      proposal: optional proposal GF called as
        ``proposal(carry, x_t, observations_t, *proposal_args)``; it must propose every
        latent address of the kernel. Default: bootstrap (the model's transition).
      proposal_args: extra proposal arguments (parameters), shared over time.
      ess_threshold: resample when ESS < ``ess_threshold * N``; in ``[0, 1]``, 0 = never
        (sequential importance sampling), 1 = always.
      scheme: resampling scheme (``"multinomial"``, ``"stratified"``, ``"systematic"``,
        ``"residual"``).
      rejuvenation: optional MCMC kernel on a step trace (``pg.mc.mh``, ``mala``, ``hmc``,
        ``regenerate``) applied to every particle after weighting; it leaves the
        step's conditional target invariant, so the weights stay.
      num_rejuvenation_steps: how many rejuvenation moves per time step.
      obs_mask: missing observations, as in numpyro's ``obs_mask``: True where observed,
        False where missing. A boolean array of shape ``(T,)`` (one flag per step, for every
        observed address) or a dict/``ChoiceMap`` of such arrays keyed by observed address
        (addresses left out are always observed). A mask may also cover a leading part of an
        observation's shape, e.g. ``(T, D)`` for the ``D`` elements of a ``pg.vmap`` plate of
        sensors; each masked-out value must be a whole sample site. A missing observation is
        not conditioned on: its site is drawn from the model (so the particle still
        propagates, and an observation that feeds the carry is imputed) and the step's
        weight omits its likelihood; the values given there are ignored (NaN is fine).
        A proposal sees missing entries of ``observations_t`` as NaN (or the integer
        minimum) and must cope with them. A NaN observation that ``obs_mask`` does not mark
        missing is a ``ConstraintError`` (naming the address and steps); when the
        observations are traced (arguments of a jitted function) it is found at run time
        under :func:`pg.validate` (a ``ValidationError``), and otherwise makes the weights
        NaN.

    Returns:
      A kernel: ``init(init_carry) -> ParticleState`` starts every particle from the
      scan's initial carry (checking the proposal and the carry's structure);
      ``step(key, state) -> (state, SMCInfo)``. Drive it for at most ``T`` steps (the
      observations' length): stepping a known state past ``T`` raises a
      ``SettingError``; under ``jit`` the weights of such a step are NaN, and under
      :func:`pg.validate` it raises a ``ValidationError``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def tracker(position, velocity):
        ...     position = position + velocity + pg.sample("jitter", pg.Normal(0.0, 0.3))
        ...     return position, pg.sample("reading", pg.Normal(position, 1.0))
        >>> readings = {"reading": jnp.arange(20.0)}
        >>> pf = pg.mc.particle_filter(pg.scan(tracker), readings, xs=jnp.ones(20), num_particles=100)
        >>> state, info = pg.run(pf, jax.random.key(0), pf.init(0.0), 20)
        >>> state.log_weights.shape, info.ess.shape
        ((100,), ())

        Readings 5 to 9 missing: those steps only propagate the particles.

        >>> seen = (jnp.arange(20) < 5) | (jnp.arange(20) >= 10)
        >>> pf = pg.mc.particle_filter(pg.scan(tracker), readings, xs=jnp.ones(20), num_particles=100,
        ...                            obs_mask=seen)
        >>> state, info = pg.run(pf, jax.random.key(0), pf.init(0.0), 20)
        >>> bool(jnp.isfinite(state.log_evidence))
        True
    """
    return _particle_filter(model, observations, xs, num_particles, proposal, proposal_args, ess_threshold,
                            scheme, rejuvenation, num_rejuvenation_steps, "particle_filter", obs_mask)


def _particle_filter(model, observations, xs, num_particles, proposal, proposal_args, ess_threshold, scheme,
                     rejuvenation, num_rejuvenation_steps, where: str, obs_mask=None) -> Kernel:
    """:func:`particle_filter`, with errors naming ``where`` (the public function called)."""
    num_particles, num_rejuvenation_steps = _check_settings(
        model, num_particles, proposal, ess_threshold, scheme, rejuvenation, num_rejuvenation_steps, where)
    observations = as_choicemap(observations)
    num_steps = model._length(xs)
    _check_observations(observations, num_steps, where)
    obs_mask = _check_missing(obs_mask, observations, num_steps, where)
    proposal_args = tuple(proposal_args)
    propose = _proposer(model.kernel if obs_mask is None else _Imputing(model.kernel), proposal, proposal_args)

    def init(init_carry) -> ParticleState:
        choices_layout, dtype, init_carry = _step_layout(
            model, propose, proposal, proposal_args, jax.tree.map(jnp.asarray, init_carry),
            _at(xs, 0), _at(observations, 0), where)
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (num_particles,) + jnp.shape(c)), init_carry)
        choices = jax.tree.map(lambda s: jnp.zeros((num_particles,) + s.shape, s.dtype), choices_layout)
        return ParticleState(carry, choices, jnp.zeros((num_particles,), dtype), jnp.zeros((), dtype),
                             jnp.zeros((), jnp.int32))

    def step(key, state: ParticleState):
        within = _check_within_horizon(state.step, num_steps, where)
        dtype = state.log_weights.dtype
        k_resample, k_propose, k_rejuvenate = jax.random.split(key, 3)
        ess_before = ess(state.log_weights)
        # Only the carry is resampled: the step's choices are replaced right below.
        carry, log_weights, resampled, ancestors = maybe_resample(
            k_resample, state.carry, state.log_weights, ess_threshold, scheme
        )
        x_t = _at(xs, state.step)
        obs_t = _drop_missing(_at(observations, state.step), _at(obs_mask, state.step), state.step, where)
        keys = particle_keys(k_propose, num_particles)  # one key per particle: sharding-proof
        traces, log_increments = jax.vmap(lambda k, c: propose(k, c, x_t, obs_t))(keys, carry)
        acceptance_rate = jnp.zeros((), dtype)
        if rejuvenation is not None:
            traces, acceptance_rate = _rejuvenate(rejuvenation, num_rejuvenation_steps, k_rejuvenate, traces, dtype)
        # Past the horizon there is no observation left: poison the weights, never reuse the last one.
        log_weights = log_weights + jnp.where(within, log_increments, jnp.nan)
        new_state = ParticleState(
            carry=traces.retval[0], choices=traces.choices, log_weights=log_weights,
            log_evidence=log_mean_exp(log_weights), step=state.step + 1,
        )
        return new_state, SMCInfo(ess_before, resampled, ancestors, acceptance_rate)

    return Kernel(init=init, step=step, horizon=num_steps)


def smc(key: jax.Array, model: Scan, observations, init_carry, xs=None, *, num_particles: int,
        proposal: GenerativeFunction | None = None, proposal_args: tuple = (),
        ess_threshold: float = 0.5, scheme: str = "systematic", rejuvenation: Kernel | None = None,
        num_rejuvenation_steps: int = 1, keep: str = "all", obs_mask=None) -> SMCResult:
    """Run a :func:`particle_filter` from ``init_carry`` over every time step, in one call.

    Builds the kernel, starts it with ``init(init_carry)`` and drives it with
    :func:`pg.run` (one ``lax.scan``). The run compiles itself: the first call with given
    settings (model, sizes, proposal, scheme, ``keep``) jits it, later calls with new
    observations, inputs, carry or key reuse the compiled program. Arguments are those of :func:`particle_filter`,
    (``obs_mask`` marks missing observations), plus the PRNG ``key``, the scan's
    ``init_carry`` and ``keep``:
    ``"all"`` (default) stores the particles after every step (memory ``T * N``);
    ``"last"`` stores only the final ones (memory independent of ``T``), as in
    :func:`pg.run`; use it when only the evidence or the final filter is needed.
    With ``keep="all"``, :func:`pg.mc.genealogy_smoother` and
    :func:`pg.mc.backward_simulation_smoother` turn the result into smoothed trajectories.

    Returns:
      An :class:`SMCResult`: ``log_evidence``, ``final`` state, per-step ``states``
      (weighted filtering particles; ``None`` with ``keep="last"``) and ``infos``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def noisy_walk(z, _):
        ...     z = z + pg.sample("dz", pg.Normal(0.0, 1.0))
        ...     return z, pg.sample("y", pg.Normal(z, 0.5))
        >>> walk, ys = pg.scan(noisy_walk, length=10), {"y": jnp.zeros(10)}
        >>> result = pg.mc.smc(jax.random.key(0), walk, ys, 0.0, num_particles=200)
        >>> result.states.choices["dz"].shape
        (10, 200)
        >>> last = pg.mc.smc(jax.random.key(0), walk, ys, 0.0, num_particles=200, keep="last")
        >>> last.states is None, last.infos.ess.shape
        (True, ())
    """
    if keep not in ("last", "all"):
        raise SettingError(f"smc: keep must be 'last' or 'all', got {keep!r}")
    # Built once eagerly for its checks on the concrete observations (a NaN not marked missing).
    _particle_filter(model, observations, xs, num_particles, proposal, proposal_args, ess_threshold,
                     scheme, rejuvenation, num_rejuvenation_steps, "smc", obs_mask)
    return compiled_call(_smc_program, (model, num_particles, proposal, ess_threshold, scheme, rejuvenation,
                                        num_rejuvenation_steps, keep),
                         key, as_choicemap(observations), init_carry, xs, tuple(proposal_args), obs_mask)


def _smc_program(model, num_particles, proposal, ess_threshold, scheme, rejuvenation, num_rejuvenation_steps,
                 keep):
    """The :func:`smc` run for fixed settings; data, inputs and key are its (traced) arguments."""

    def program(key, observations, init_carry, xs, proposal_args, obs_mask):
        kernel = _particle_filter(model, observations, xs, num_particles, proposal, proposal_args, ess_threshold,
                                  scheme, rejuvenation, num_rejuvenation_steps, "smc", obs_mask)
        if keep == "last":
            final, last_info = run(kernel, key, kernel.init(init_carry), kernel.horizon, keep="last")
            return SMCResult(final.log_evidence, final, None, last_info)
        final, (states, infos) = run(kernel, key, kernel.init(init_carry), kernel.horizon, keep="all")
        return SMCResult(final.log_evidence, final, states, infos)

    return program
