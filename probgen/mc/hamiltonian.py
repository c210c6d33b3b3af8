"""NUTS, HMC and MALA on a position, and Stan's window adaptation, as :class:`pg.Kernel`\\ s.

The target is a ``logdensity(position)`` function or a :func:`pg.mc.posterior` (a model's
latents in unconstrained coordinates). Positions are pytrees; a mass matrix acts on the
flattened position (``jax.flatten_util.ravel_pytree`` order: dict keys sorted).

The trajectory code — the leapfrog integrator, NUTS's iterative doubling with multinomial
sampling, the generalized U-turn check and divergence detection (Hoffman & Gelman 2014;
Betancourt 2017), dual averaging and the Welford covariance — is blackjax's, a declared
dependency: it is the field's well-kept implementation, and writing it again would only add
a second copy to keep right. probgen contributes what blackjax leaves to the user: the
kernel protocol (``init`` / ``step`` driven by :func:`pg.run`), the adaptation as a kernel
whose state carries the warmup schedule, the model posterior in unconstrained space, the
dtype discipline (float32 stays float32 under x64) and the self-compiling multi-chain driver
(:func:`pg.mc.run_mcmc`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, mass_matrix_adaptation
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from blackjax.mcmc import hmc as _bj_hmc
from blackjax.mcmc import nuts as _bj_nuts
from jax.flatten_util import ravel_pytree

from probgen.core.checks import static_int
from probgen.core.errors import ArgumentError, SettingError
from probgen.kernels import Kernel, check_horizon
from probgen.mc.mcmc import _check_step_size
from probgen.mc.posterior import as_logdensity

ALGORITHMS = ("nuts", "hmc")


class HamiltonianState(NamedTuple):
    """The state of a gradient-based chain: the position and its log density and gradient.

    Attributes:
      position: the current position (a pytree; unconstrained for a ``pg.mc.posterior``).
      logdensity: the target's log density there.
      logdensity_grad: its gradient (a pytree like ``position``).
    """

    position: Any
    logdensity: jax.Array
    logdensity_grad: Any


class HamiltonianInfo(NamedTuple):
    """Diagnostics of one NUTS or HMC transition.

    Attributes:
      acceptance_rate: the mean Metropolis acceptance probability over the trajectory
        (NUTS) or of the proposal (HMC): what step-size adaptation targets.
      is_divergent: whether the energy error exceeded the divergence threshold.
      energy: the Hamiltonian at the new state (for the E-BFMI diagnostic).
      num_integration_steps: leapfrog steps taken (``2**tree_depth - 1`` at most for NUTS).
    """

    acceptance_rate: jax.Array
    is_divergent: jax.Array
    energy: jax.Array
    num_integration_steps: jax.Array


def _dtype(position):
    leaves = jax.tree.leaves(position)
    if not leaves or not all(jnp.issubdtype(jnp.result_type(x), jnp.floating) for x in leaves):
        raise ArgumentError("a position must be a non-empty pytree of floating arrays, got "
                            f"{jax.tree.map(lambda x: jnp.result_type(x).name, position)}")
    return jnp.result_type(*leaves)


def _cast(tree, dtype):
    """Floating leaves in ``dtype``: a scan carry keeps one type whatever blackjax promotes to."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
                        else jnp.asarray(x), tree)


def _init_state(logdensity: Callable, position) -> HamiltonianState:
    dtype = _dtype(position)
    position = _cast(position, dtype)
    value, grad = jax.value_and_grad(logdensity)(position)
    return HamiltonianState(position, jnp.asarray(value, dtype), _cast(grad, dtype))


def _check_mass(inverse_mass_matrix, position, where: str):
    """The inverse mass matrix in the position's dtype (ones when None), its shape checked."""
    dtype = _dtype(position)
    size = ravel_pytree(position)[0].shape[0]
    if inverse_mass_matrix is None:
        return jnp.ones((size,), dtype)
    matrix = jnp.asarray(inverse_mass_matrix, dtype)
    if matrix.shape not in ((size,), (size, size)):
        raise ArgumentError(
            f"{where}: inverse_mass_matrix must have shape ({size},) (diagonal) or ({size}, {size}) "
            f"(dense) for a position of {size} coordinates, got {matrix.shape}")
    return matrix


def _transition(algorithm: str, logdensity: Callable, num_leapfrog_steps: int, max_num_doublings: int,
                divergence_threshold: float) -> Callable:
    """``(key, state, step_size, inverse_mass_matrix) -> (state, HamiltonianInfo)`` of one algorithm."""
    if algorithm == "nuts":
        bj_kernel = _bj_nuts.build_kernel(divergence_threshold=divergence_threshold)
        extra = {"max_num_doublings": max_num_doublings}
    else:
        bj_kernel = _bj_hmc.build_kernel(divergence_threshold=divergence_threshold)
        extra = {"num_integration_steps": num_leapfrog_steps}

    def transition(key, state: HamiltonianState, step_size, inverse_mass_matrix):
        dtype = state.logdensity.dtype
        new, info = bj_kernel(key, _bj_hmc.HMCState(*state), logdensity, jnp.asarray(step_size, dtype),
                              inverse_mass_matrix, **extra)
        new = HamiltonianState(*_cast(tuple(new), dtype))
        return new, HamiltonianInfo(jnp.asarray(info.acceptance_rate, dtype), info.is_divergent,
                                    jnp.asarray(info.energy, dtype),
                                    jnp.asarray(info.num_integration_steps, jnp.int32))

    return transition


def _settings(where, num_leapfrog_steps, max_num_doublings, divergence_threshold):
    num_leapfrog_steps = static_int(num_leapfrog_steps, "num_leapfrog_steps", where)
    max_num_doublings = static_int(max_num_doublings, "max_num_doublings", where)
    if not divergence_threshold > 0:
        raise SettingError(f"{where}: divergence_threshold must be positive, got {divergence_threshold!r}")
    return num_leapfrog_steps, max_num_doublings, float(divergence_threshold)


def _position_kernel(algorithm: str, target, step_size, inverse_mass_matrix, num_leapfrog_steps: int = 10,
                     max_num_doublings: int = 10, divergence_threshold: float = 1000.0) -> Kernel:
    where = algorithm
    logdensity = as_logdensity(target, where)
    _check_step_size(step_size, where)
    transition = _transition(algorithm, logdensity,
                             *_settings(where, num_leapfrog_steps, max_num_doublings, divergence_threshold))

    def init(position) -> HamiltonianState:
        _check_mass(inverse_mass_matrix, position, f"{where}.init")
        return _init_state(logdensity, position)

    def step(key, state: HamiltonianState):
        matrix = _check_mass(inverse_mass_matrix, state.position, where)
        return transition(key, state, step_size, matrix)

    return Kernel(init=init, step=step)


def nuts(target, step_size: float, inverse_mass_matrix=None, *, max_num_doublings: int = 10,
         divergence_threshold: float = 1000.0) -> Kernel:
    """The No-U-Turn Sampler (multinomial variant) on a position.

    Each transition doubles a leapfrog trajectory forwards or backwards in time until it
    makes a U-turn (the generalized criterion, checked on every sub-tree), diverges (energy
    error above ``divergence_threshold``) or reaches ``2**max_num_doublings - 1`` steps, and
    draws the next state from the trajectory by multinomial sampling with a bias towards
    the last doubling.

    Args:
      target: a ``logdensity(position)`` function or a :func:`pg.mc.posterior`.
      step_size: the leapfrog step size (tune it with :func:`window_adaptation`).
      inverse_mass_matrix: ``(d,)`` diagonal or ``(d, d)`` dense over the flattened
        position; None is the identity.
      max_num_doublings: the tree-depth cap (10, as in Stan).
      divergence_threshold: the energy error that flags a divergence.

    Returns:
      A :class:`pg.Kernel`: ``init(position) -> HamiltonianState``,
      ``step(key, state) -> (state, HamiltonianInfo)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> kernel = pg.mc.nuts(lambda x: -0.5 * jnp.sum(x**2), step_size=0.8)
        >>> _, (xs, infos) = pg.run(kernel, jax.random.key(0), kernel.init(jnp.zeros(2)), 500,
        ...                         keep=lambda s: s.position)
        >>> xs.shape, bool(abs(xs.var() - 1.0) < 0.2)
        ((500, 2), True)

    Reference: Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 2014; Betancourt, "A
    conceptual introduction to Hamiltonian Monte Carlo", 2017.
    """
    return _position_kernel("nuts", target, step_size, inverse_mass_matrix,
                            max_num_doublings=max_num_doublings, divergence_threshold=divergence_threshold)


def hmc_position_kernel(target, step_size: float, num_leapfrog_steps: int = 10, inverse_mass_matrix=None,
                        divergence_threshold: float = 1000.0) -> Kernel:
    """HMC with a fixed number of leapfrog steps on a position (what ``pg.mc.hmc`` builds
    for a log density or a posterior)."""
    return _position_kernel("hmc", target, step_size, inverse_mass_matrix,
                            num_leapfrog_steps=num_leapfrog_steps, divergence_threshold=divergence_threshold)


# -- window adaptation --------------------------------------------------------------------------------


class WindowAdaptationState(NamedTuple):
    """The state of Stan's warmup.

    Attributes:
      sampler: the chain's :class:`HamiltonianState`.
      step_size: the step size the next transition uses.
      inverse_mass_matrix: the inverse mass matrix the next transition uses.
      dual_averaging: the step-size adaptation's state.
      mass_matrix: the covariance estimate of the current slow window.
      step: the warmup step index (it picks the schedule's window).
    """

    sampler: HamiltonianState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    dual_averaging: DualAveragingAdaptationState
    mass_matrix: MassMatrixAdaptationState
    step: jax.Array


class AdaptationInfo(NamedTuple):
    """One warmup step: the transition's diagnostics and the step size it used."""

    acceptance_rate: jax.Array
    is_divergent: jax.Array
    step_size: jax.Array


def window_adaptation(target, num_steps: int, *, algorithm: str = "nuts", dense_mass: bool = False,
                      target_acceptance_rate: float = 0.8, initial_step_size: float = 1.0,
                      num_leapfrog_steps: int = 10, max_num_doublings: int = 10,
                      divergence_threshold: float = 1000.0, _continue: bool = False) -> Kernel:
    """Stan's warmup of NUTS or HMC: dual-averaging step size, windowed mass matrix.

    A fast window (step size only), then slow windows doubling in length, each ending with
    the mass matrix set to the window's regularized covariance estimate (diagonal or dense)
    and the step-size adaptation restarted, then a final fast window. Run it for its
    ``num_steps`` with :func:`pg.run`, then read the tuned values with
    :func:`adapted_parameters` and sample with :func:`nuts` (or ``pg.mc.hmc``) — or let
    :func:`run_mcmc` do all of it for several chains.

    Args:
      target: a ``logdensity(position)`` function or a :func:`pg.mc.posterior`.
      num_steps: the warmup length (the kernel's horizon; the schedule is made for it).
      algorithm: ``"nuts"`` or ``"hmc"``.
      dense_mass: adapt a dense mass matrix (else diagonal).
      target_acceptance_rate: what dual averaging steers the mean acceptance rate to.
      initial_step_size: the step size the first transitions use.
      num_leapfrog_steps: HMC's trajectory length.
      max_num_doublings: NUTS's tree-depth cap.
      divergence_threshold: the energy error that flags a divergence.
      _continue: (internal, for :func:`run_mcmc`) return a kernel without a horizon that
        goes on sampling with the tuned values after ``num_steps`` (info:
        :class:`HamiltonianInfo`), so warmup and sampling share one compiled transition.

    Returns:
      A :class:`pg.Kernel` with ``horizon=num_steps``: ``init(position) ->
      WindowAdaptationState``, ``step(key, state) -> (state, AdaptationInfo)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> scales = jnp.array([0.1, 10.0])
        >>> logdensity = lambda x: -0.5 * jnp.sum((x / scales) ** 2)
        >>> warmup = pg.mc.window_adaptation(logdensity, 500)
        >>> state, _ = pg.run(warmup, jax.random.key(0), warmup.init(jnp.ones(2)), 500)
        >>> params = pg.mc.adapted_parameters(state)
        >>> bool(jnp.allclose(params["inverse_mass_matrix"], scales**2, rtol=0.5))
        True

    Reference: Stan Reference Manual, "HMC algorithm parameters" (the adaptation windows);
    Hoffman & Gelman 2014 (dual averaging).
    """
    where = "window_adaptation"
    if algorithm not in ALGORITHMS:
        raise SettingError(f"{where}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    num_steps = static_int(num_steps, "num_steps", where)
    if not 0.0 < target_acceptance_rate < 1.0:
        raise SettingError(f"{where}: target_acceptance_rate must be in (0, 1), got {target_acceptance_rate!r}")
    _check_step_size(initial_step_size, where)
    logdensity = as_logdensity(target, where)
    transition = _transition(algorithm, logdensity,
                             *_settings(where, num_leapfrog_steps, max_num_doublings, divergence_threshold))
    schedule = build_schedule(num_steps)
    slow = jnp.asarray([stage == 1 for stage, _ in schedule])
    window_end = jnp.asarray([end for _, end in schedule])
    # The second half of the final fast window refines the step size with a 10x smaller gain.
    ends = [i for i, (_, end) in enumerate(schedule) if end]
    final_start = ends[-1] + 1 if ends else 0
    # Only a final window of Stan's default length (50) or so has room for it: in a short
    # warmup the average would be of the few iterates right after a restart.
    final_length = num_steps - final_start
    refine_start = final_start + final_length // 2 if final_length >= 40 else num_steps + 1  # never
    mm_init, mm_update, mm_final = mass_matrix_adaptation(not dense_mass)
    da_init, da_update, _ = dual_averaging_adaptation(target_acceptance_rate)
    _, refine_update, _ = dual_averaging_adaptation(target_acceptance_rate, gamma=10 * _DA_GAMMA)

    def init(position) -> WindowAdaptationState:
        sampler = _init_state(logdensity, position)
        dtype = sampler.logdensity.dtype
        size = ravel_pytree(sampler.position)[0].shape[0]
        identity = jnp.eye(size, dtype=dtype) if dense_mass else jnp.ones((size,), dtype)
        step_size = jnp.asarray(initial_step_size, dtype)
        return WindowAdaptationState(sampler, step_size, identity, _cast(da_init(step_size), dtype),
                                     _cast(mm_init(size, identity), dtype), jnp.zeros((), jnp.int32))

    def adapt(state: WindowAdaptationState, position, acceptance_rate):
        dtype = state.step_size.dtype
        index = jnp.minimum(state.step, num_steps - 1)  # evaluated (then dropped) past warmup under vmap
        is_slow, is_end = slow[index], window_end[index]
        dual = jax.lax.cond(index >= refine_start, refine_update, da_update, state.dual_averaging, acceptance_rate)
        dual = jax.lax.cond(index == refine_start - 1, _refine_init, lambda d: d, _cast(dual, dtype))
        mass = jax.lax.cond(is_slow, lambda m: _cast(mm_update(m, position), dtype), lambda m: m, state.mass_matrix)

        def end_window(args):
            mass, dual, _ = args
            mass = _cast(mm_final(mass), dtype)
            dual = _cast(da_init(jnp.exp(dual.log_step_size_avg)), dtype)
            return mass, dual, mass.inverse_mass_matrix

        mass, dual, matrix = jax.lax.cond(is_end, end_window, lambda args: args,
                                          (mass, dual, state.inverse_mass_matrix))
        # The last warmup step hands sampling dual averaging's iterate average.
        log_step_size = jnp.where(index == num_steps - 1, dual.log_step_size_avg, dual.log_step_size)
        return jnp.exp(log_step_size).astype(dtype), matrix, dual, mass

    def advance(key, state: WindowAdaptationState):
        """One transition, then one adaptation update while ``step < num_steps`` (fixed after)."""
        sampler, info = transition(key, state.sampler, state.step_size, state.inverse_mass_matrix)
        tuned = jax.lax.cond(
            state.step < num_steps, adapt,
            lambda s, *_: (s.step_size, s.inverse_mass_matrix, s.dual_averaging, s.mass_matrix),
            state, sampler.position, info.acceptance_rate)
        return WindowAdaptationState(sampler, *tuned, state.step + 1), info

    def step(key, state: WindowAdaptationState):
        check_horizon(state.step, num_steps, where)
        new, info = advance(key, state)
        return new, AdaptationInfo(info.acceptance_rate, info.is_divergent, state.step_size)

    if _continue:
        return Kernel(init=init, step=advance)
    return Kernel(init=init, step=step, horizon=num_steps)


_DA_GAMMA = 0.05  # dual averaging's default gain parameter (Hoffman & Gelman 2014)


def _refine_init(dual: DualAveragingAdaptationState) -> DualAveragingAdaptationState:
    """Restart dual averaging at its current average, shrinking towards it (not 10x above it).

    Dual averaging's iterates fluctuate by O(1 / gamma) in log step size whatever the
    iteration; the mean acceptance over fluctuating step sizes is below the acceptance at
    their mean, so the averaged step size ends too small and sampling accepts ~0.9 for a
    0.8 target (as Stan and NumPyro do). Finishing with a 10x smaller gain, started at the
    average, removes that bias: the sampler's acceptance then matches the target.
    """
    log_step_size = dual.log_step_size_avg
    zero = jnp.zeros_like(log_step_size)
    return DualAveragingAdaptationState(log_step_size, zero, jnp.ones_like(dual.step), zero, log_step_size)


def adapted_parameters(state: WindowAdaptationState) -> dict:
    """The tuned ``step_size`` (dual averaging's iterate average) and ``inverse_mass_matrix``
    at the end of :func:`window_adaptation`: keyword arguments of :func:`nuts`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> warmup = pg.mc.window_adaptation(lambda x: -0.5 * jnp.sum(x**2), 100)
        >>> state, _ = pg.run(warmup, jax.random.key(0), warmup.init(jnp.zeros(3)), 100)
        >>> sorted(pg.mc.adapted_parameters(state))
        ['inverse_mass_matrix', 'step_size']
    """
    if not isinstance(state, WindowAdaptationState):
        raise ArgumentError(f"adapted_parameters: expected a WindowAdaptationState, got {type(state).__name__}")
    step_size = jnp.exp(state.dual_averaging.log_step_size_avg).astype(state.step_size.dtype)
    return {"step_size": step_size, "inverse_mass_matrix": state.inverse_mass_matrix}
