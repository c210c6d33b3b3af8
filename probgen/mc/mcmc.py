"""MCMC moves on traces, each a :class:`pg.Kernel` whose state is a :class:`pg.Trace`.

* :func:`mh` — random-walk Metropolis–Hastings on the selected continuous choices,
  weighed by the GF's ``update``.
* :func:`mala` — Metropolis-adjusted Langevin (Roberts & Tweedie 1996).
* :func:`hmc` — Hamiltonian Monte Carlo with a multi-step leapfrog (Neal 2011).
* :func:`regenerate` — propose the selected choices afresh from the prior given the rest
  (Gibbs-style regeneration), accepted with the Metropolis–Hastings ratio
  ``p(rest | new) / p(rest | old)`` (the prior terms cancel against the proposal).

Each factory returns a kernel with ``init(trace) -> trace`` (the state is the trace
itself) and ``step(key, trace) -> (trace, MCMCInfo)``. Gradients come from ``jax.grad`` of
the GF's ``assess`` with respect to the selected values. The position-level proposals
(``*_proposal``) and the accept step (:func:`mh_accept`) are reused by tempered SMC.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.choicemap import ChoiceMap, Selection, as_selection, format_address
from probgen.core.errors import ArgumentError, ConstraintError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.core.trace import Trace
from probgen.core.unconstrained import assess_unconstrained, to_unconstrained
from probgen.kernels import Kernel
from probgen.mc.posterior import Posterior, as_logdensity


class MCMCInfo(NamedTuple):
    """Diagnostics of one MCMC move.

    Attributes:
      acceptance_rate: the acceptance probability ``min(1, exp(log_alpha))`` of this move
        (its mean over moves estimates the sampler's acceptance rate).
      accepted: whether the proposal was accepted.
    """

    acceptance_rate: jax.Array
    accepted: jax.Array


def mh_accept(key: jax.Array, log_alpha: jax.Array, proposed, current):
    """The Metropolis–Hastings accept step: ``proposed`` with probability ``min(1, exp(log_alpha))``.

    A NaN ``log_alpha`` (a proposal where the density is undefined) is a rejection.

    Args:
      key: PRNG key of the uniform draw.
      log_alpha: the scalar log acceptance ratio.
      proposed: the proposed state (any pytree).
      current: the current state, of the same structure.

    Returns:
      ``(state, MCMCInfo)``: the proposed or the current state, leaf by leaf, and the
      move's acceptance probability (in ``log_alpha``'s dtype) and decision.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probgen.mc.mcmc import mh_accept
        >>> state, info = mh_accept(jax.random.key(0), jnp.asarray(jnp.nan), jnp.ones(2), jnp.zeros(2))
        >>> state.tolist(), float(info.acceptance_rate), bool(info.accepted)
        ([0.0, 0.0], 0.0, False)
    """
    log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
    accepted = jnp.log(jax.random.uniform(key)) < log_alpha
    state = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), proposed, current)
    return state, MCMCInfo(jnp.exp(jnp.minimum(log_alpha, 0.0)), accepted)


def _check_trace(trace, where: str, what: str = "the state") -> None:
    if not isinstance(trace, Trace):
        raise ArgumentError(f"{where}: {what} must be a pg.Trace (the kernel's init(trace) returns the "
                            f"state), got {type(trace).__name__}")


def _selected(trace: Trace, selection: Selection, where: str, continuous: bool) -> ChoiceMap:
    _check_trace(trace, where)
    values = trace.choices.filter(selection)
    if values.is_empty():
        available = ", ".join(format_address(a) for a in trace.choices.addresses()) or "none"
        raise ConstraintError(
            f"{where}: the selection {selection!r} picks no choice of {trace.gf.__name__} "
            f"(its addresses: {available})"
        )
    if continuous:
        for address, value in values.to_dict().items():
            if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
                raise ArgumentError(
                    f"{where}: the selection's address {format_address(address)!r} holds "
                    f"{jnp.result_type(value)} values; "
                    "this move needs continuous (floating) choices; use pg.mc.regenerate for discrete ones"
                )
    return values


def _normal_like(key, tree):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noise)


def _sq_norm(tree) -> jax.Array:
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))


def rw_proposal(key: jax.Array, position, scale: float):
    """A Gaussian random-walk proposal ``position + scale * N(0, I)`` on a pytree.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> pg.mc.rw_proposal(jax.random.key(0), jnp.zeros(3), 0.1).shape
        (3,)
    """
    noise = _normal_like(key, position)
    return jax.tree.map(lambda x, e: x + scale * e, position, noise)


def mala_proposal(key: jax.Array, position, logdensity_fn: Callable, step_size: float):
    """One MALA proposal and its log acceptance ratio (Roberts & Tweedie 1996).

    Args:
      key: PRNG key.
      position: a pytree of floating arrays.
      logdensity_fn: ``position -> scalar`` unnormalized log target.
      step_size: the Langevin step ``eps``; the proposal is
        ``x + eps * grad log p(x) + sqrt(2 eps) * N(0, I)``.

    Returns:
      ``(proposed_position, log_alpha)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x, log_alpha = pg.mc.mala_proposal(jax.random.key(0), jnp.zeros(2),
        ...                                    lambda x: -0.5 * jnp.sum(x**2), 0.1)
        >>> x.shape, log_alpha.shape
        ((2,), ())
    """
    value_and_grad = jax.value_and_grad(logdensity_fn)
    logp, grad = value_and_grad(position)
    proposed, log_alpha, _, _ = _mala_step(key, position, logp, grad, value_and_grad, step_size)
    return proposed, log_alpha


def _mala_step(key, position, logp, grad, value_and_grad, step_size):
    """A MALA proposal from a point whose log density and gradient are known:
    ``(proposed, log_alpha, its log density, its gradient)``."""
    noise = _normal_like(key, position)
    proposed = jax.tree.map(lambda x, g, e: x + step_size * g + jnp.sqrt(2.0 * step_size) * e,
                            position, grad, noise)
    new_logp, new_grad = value_and_grad(proposed)

    def log_q(to, frm, grad_frm):  # log N(to; frm + eps grad, 2 eps I), constants cancel
        diff = jax.tree.map(lambda a, b, g: a - b - step_size * g, to, frm, grad_frm)
        return -_sq_norm(diff) / (4.0 * step_size)

    log_alpha = new_logp - logp + log_q(position, proposed, new_grad) - log_q(proposed, position, grad)
    return proposed, log_alpha, new_logp, new_grad


def hmc_proposal(key: jax.Array, position, logdensity_fn: Callable, step_size: float,
                 num_leapfrog_steps: int):
    """One HMC proposal (unit mass matrix) and its log acceptance ratio (Neal 2011).

    The leapfrog integrator takes ``num_leapfrog_steps`` full steps: half a momentum
    step, then alternating full position and momentum steps, then the final momentum
    half step; the gradient is evaluated once per step, inside one ``lax.scan``.

    Returns:
      ``(proposed_position, log_alpha)`` with ``log_alpha = H(old) - H(new)``.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> x, log_alpha = pg.mc.hmc_proposal(jax.random.key(0), jnp.zeros(2),
        ...                                   lambda x: -0.5 * jnp.sum(x**2), 0.1, 10)
        >>> bool(log_alpha > -0.01)
        True
    """
    num_leapfrog_steps = static_int(num_leapfrog_steps, "num_leapfrog_steps", "hmc")
    value_and_grad = jax.value_and_grad(logdensity_fn)
    logp, grad = value_and_grad(position)
    momentum = _normal_like(key, position)
    kinetic = 0.5 * _sq_norm(momentum)
    half = jax.tree.map(lambda p, g: p + 0.5 * step_size * g, momentum, grad)

    def leapfrog(carry, _):
        x, p, _, _ = carry
        x = jax.tree.map(lambda a, b: a + step_size * b, x, p)
        new_logp, g = value_and_grad(x)
        p = jax.tree.map(lambda a, b: a + step_size * b, p, g)
        return (x, p, new_logp, g), None

    (proposed, p, new_logp, new_grad), _ = jax.lax.scan(
        leapfrog, (position, half, logp, grad), None, length=num_leapfrog_steps
    )
    # The loop took a full momentum step at the end; take back half of it.
    p = jax.tree.map(lambda a, b: a - 0.5 * step_size * b, p, new_grad)
    new_kinetic = 0.5 * _sq_norm(p)
    log_alpha = (new_logp - new_kinetic) - (logp - kinetic)
    return proposed, log_alpha


def _gradient_move(where: str, selection, propose: Callable) -> Kernel:
    """An MH kernel over traces moving the selected continuous choices in unconstrained coordinates.

    The selected values are mapped to the real line (``biject_to`` of each site's support,
    :mod:`probgen.core.unconstrained`); ``propose(key, u, logdensity) -> (u', log_alpha)``
    works there, on the density of ``u`` (log-det Jacobians included), so a positive or
    bounded choice never leaves its support.
    """

    def step(key, trace):
        values = _selected(trace, selection, where, continuous=True)
        k_prop, k_update, k_accept = jax.random.split(key, 3)
        gf, args = trace.gf, trace.args
        coordinates = to_unconstrained(gf, trace.choices, args, selection).filter(selection)

        def logdensity(u):
            return assess_unconstrained(gf, trace.choices.merge(u), args, selection).score

        proposed_u, log_alpha = propose(k_prop, coordinates, logdensity)
        proposed = assess_unconstrained(gf, trace.choices.merge(proposed_u), args, selection).choices
        new_trace, _, _ = gf.update(k_update, trace, proposed.filter(values.addresses()))
        return mh_accept(k_accept, log_alpha, new_trace, trace)

    return Kernel(init=_init_trace(where), step=step)


def _check_step_size(step_size, where):
    if isinstance(step_size, (int, float)) and not step_size > 0:
        raise SettingError(f"{where}: step_size must be positive, got {step_size!r}")


def _init_trace(where):
    def init(trace: Trace) -> Trace:
        _check_trace(trace, f"{where}.init", "the starting position")
        return trace

    return init


def _trace_move(where: str, selection, propose: Callable) -> Kernel:
    """A random-walk MH kernel over traces moving the selected continuous choices.

    ``propose(key, values) -> proposed_values`` must be symmetric: the move is accepted on
    the weight of the GF's ``update``.
    """

    def step(key, trace):
        values = _selected(trace, selection, where, continuous=True)
        k_prop, k_update, k_accept = jax.random.split(key, 3)
        new_trace, log_weight, _ = trace.gf.update(k_update, trace, propose(k_prop, values))
        return mh_accept(k_accept, log_weight, new_trace, trace)

    return Kernel(init=_init_trace(where), step=step)


def mh(selection, scale: float = 1.0) -> Kernel:
    """Random-walk Metropolis–Hastings on the selected (continuous) choices of a trace, or on a position.

    Proposes ``x' = x + scale * N(0, I)`` for every selected choice, moves the trace with
    the GF's ``update`` and accepts with probability ``min(1, exp(update weight))``
    (the proposal is symmetric). Given a ``logdensity(position)`` function or a
    :func:`pg.mc.posterior` instead of a selection, it moves a position and its state is a
    :class:`HamiltonianState` (``logdensity_grad`` None).

    Args:
      selection: a ``pg.Selection`` or addresses (``pg.select("z")``), a log density or a posterior.
      scale: the random-walk standard deviation.

    Returns:
      A random-walk MH :class:`pg.Kernel` (``init(trace)``; info: :class:`MCMCInfo`).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def measured(noise):
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     return pg.sample("x", pg.Normal(z, noise))
        >>> trace, _ = measured.generate(jax.random.key(0), {"x": 1.0}, 0.5)
        >>> kernel = pg.mc.mh(pg.select("z"), scale=0.5)
        >>> final, info = pg.run(kernel, jax.random.key(1), kernel.init(trace), 100)
        >>> float(final["x"])
        1.0
    """
    _check_step_size(scale, "mh")
    if _is_density(selection):
        return _rw_position_kernel(selection, scale)
    selection = as_selection(selection)
    return _trace_move("mh", selection, lambda key, values: rw_proposal(key, values, scale))


def _rw_position_kernel(target, scale) -> Kernel:
    """Random-walk MH on a position; the state is a :class:`HamiltonianState` (gradient unused: None)."""
    from probgen.mc.hamiltonian import HamiltonianState, _cast, _dtype

    logdensity = as_logdensity(target, "mh")

    def init(position):
        dtype = _dtype(position)
        position = _cast(position, dtype)
        return HamiltonianState(position, jnp.asarray(logdensity(position), dtype), None)

    def step(key, state):
        k_prop, k_accept = jax.random.split(key)
        proposed = rw_proposal(k_prop, state.position, scale)
        new_logp = jnp.asarray(logdensity(proposed), state.logdensity.dtype)
        return mh_accept(k_accept, new_logp - state.logdensity, HamiltonianState(proposed, new_logp, None), state)

    return Kernel(init=init, step=step)


def mala(target, step_size: float) -> Kernel:
    """Metropolis-adjusted Langevin, on a trace's selected choices or on a position.

    ``target`` picks what moves:

    * a ``pg.Selection`` (or addresses): the kernel's state is a ``pg.Trace`` and the
      selected continuous choices move, in unconstrained coordinates (each site's support
      mapped to the real line by ``biject_to``, the log-det Jacobian in the density);
    * a ``logdensity(position)`` function or a :func:`pg.mc.posterior`: the state is a
      :class:`HamiltonianState` on the position.

    Args:
      target: a selection, a log density or a posterior.
      step_size: the Langevin step ``eps`` (proposal variance ``2 eps``).

    Returns:
      A MALA :class:`pg.Kernel` (info: :class:`MCMCInfo`).

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def gaussian(mean):
        ...     return pg.sample("z", pg.Normal(mean, jnp.ones(3)))
        >>> trace = gaussian.simulate(jax.random.key(0), jnp.zeros(3))
        >>> kernel = pg.mc.mala(pg.select("z"), step_size=0.3)
        >>> _, (_, infos) = pg.run(kernel, jax.random.key(1), kernel.init(trace), 200, keep="all")
        >>> bool(0.5 < infos.acceptance_rate.mean() <= 1.0)
        True
        >>> on_position = pg.mc.mala(lambda x: -0.5 * jnp.sum(x**2), step_size=0.3)
        >>> state, info = on_position.step(jax.random.key(2), on_position.init(jnp.zeros(3)))
        >>> state.position.shape
        (3,)

    Reference: Roberts & Tweedie, "Exponential convergence of Langevin distributions
    and their discrete approximations", Bernoulli 1996.
    """
    _check_step_size(step_size, "mala")
    if _is_density(target):
        return _mala_position_kernel(target, step_size)
    selection = as_selection(target)
    return _gradient_move("mala", selection,
                          lambda key, values, logdensity: mala_proposal(key, values, logdensity, step_size))


def _is_density(target) -> bool:
    """Whether a move's target is a log density or a posterior (not a trace selection)."""
    return isinstance(target, Posterior) or (callable(target) and not isinstance(target, (Selection, GenerativeFunction)))


def _mala_position_kernel(target, step_size) -> Kernel:
    from probgen.mc.hamiltonian import HamiltonianState, _init_state

    logdensity = as_logdensity(target, "mala")
    value_and_grad = jax.value_and_grad(logdensity)

    def step(key, state):
        k_prop, k_accept = jax.random.split(key)
        proposed, log_alpha, new_logp, new_grad = _mala_step(
            k_prop, state.position, state.logdensity, state.logdensity_grad, value_and_grad, step_size)
        dtype = state.logdensity.dtype
        return mh_accept(k_accept, log_alpha, HamiltonianState(proposed, new_logp.astype(dtype), new_grad), state)

    return Kernel(init=lambda position: _init_state(logdensity, position), step=step)


def hmc(target, step_size: float, num_leapfrog_steps: int = 10, inverse_mass_matrix=None) -> Kernel:
    """Hamiltonian Monte Carlo, on a trace's selected choices or on a position.

    ``num_leapfrog_steps`` leapfrog steps of size ``step_size``, accepted with
    ``min(1, exp(H_old - H_new))``. ``target`` picks what moves:

    * a ``pg.Selection`` (or addresses): the state is a ``pg.Trace``; the selected
      continuous choices move in unconstrained coordinates (each site's support mapped to
      the real line by ``biject_to``; a positive scale needs no hand rescaling), with a
      unit mass matrix; info: :class:`MCMCInfo`;
    * a ``logdensity(position)`` function or a :func:`pg.mc.posterior`: the state is a
      :class:`HamiltonianState`, ``inverse_mass_matrix`` (``(d,)`` or ``(d, d)``) applies,
      and the info is a :class:`HamiltonianInfo` (with ``is_divergent``). Tune it with
      :func:`pg.mc.window_adaptation` (``algorithm="hmc"``).

    Args:
      target: a selection, a log density or a posterior.
      step_size: leapfrog step size.
      num_leapfrog_steps: a static positive int.
      inverse_mass_matrix: for a position target only; None is the identity.

    Returns:
      An HMC :class:`pg.Kernel`.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def regression(inputs):
        ...     w = pg.sample("w", pg.Normal(jnp.zeros(2), 1.0))
        ...     pg.sample("ys", pg.Normal(inputs @ w, 0.5))
        >>> inputs = jnp.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
        >>> trace, _ = regression.generate(jax.random.key(0), {"ys": jnp.array([0.0, 1.0, 2.0])}, inputs)
        >>> kernel = pg.mc.hmc(pg.select("w"), step_size=0.2, num_leapfrog_steps=10)
        >>> final, info = pg.run(kernel, jax.random.key(1), kernel.init(trace), 20)
        >>> final["w"].shape, info.acceptance_rate.shape
        ((2,), ())

    Reference: Neal, "MCMC using Hamiltonian dynamics", Handbook of MCMC, 2011.
    """
    _check_step_size(step_size, "hmc")
    num_leapfrog_steps = static_int(num_leapfrog_steps, "num_leapfrog_steps", "hmc")
    if _is_density(target):
        from probgen.mc.hamiltonian import hmc_position_kernel

        return hmc_position_kernel(target, step_size, num_leapfrog_steps, inverse_mass_matrix)
    if inverse_mass_matrix is not None:
        raise SettingError("hmc: inverse_mass_matrix applies to a log density or a pg.mc.posterior target; "
                           "moves on a trace selection use a unit mass matrix")
    selection = as_selection(target)
    return _gradient_move("hmc", selection, lambda key, values, logdensity: hmc_proposal(
        key, values, logdensity, step_size, num_leapfrog_steps))


def regenerate(selection) -> Kernel:
    """Gibbs-style regeneration: redraw the selected choices from the prior, then MH-correct.

    The proposal draws the selected choices from their prior given the others
    (``GenerativeFunction.regenerate``). Its MH acceptance ratio is the ratio of the log
    densities of the *kept, unselected* choices under the new and the old trace (the
    prior density of redrawn ones cancels against the proposal; so does that of choices
    a ``switch``/``mix`` branch change drops or adds), not the ratio of joint densities.
    Works for any value type (discrete included).

    Args:
      selection: a ``pg.Selection`` or addresses.

    Returns:
      A regeneration :class:`pg.Kernel` (``init(trace)``; info: :class:`MCMCInfo`).

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def switch_model():
        ...     z = pg.sample("z", pg.Bernoulli(probs=0.5))
        ...     return pg.sample("x", pg.Normal(2.0 * z, 1.0))
        >>> trace, _ = switch_model.generate(jax.random.key(0), {"x": 2.0})
        >>> kernel = pg.mc.regenerate(pg.select("z"))
        >>> final, info = pg.run(kernel, jax.random.key(1), kernel.init(trace), 10)
        >>> float(final["x"])
        2.0
    """
    selection = as_selection(selection)

    def step(key, trace):
        _selected(trace, selection, "regenerate", continuous=False)
        k_gen, k_accept = jax.random.split(key)
        new_trace, log_alpha = trace.gf.regenerate(k_gen, trace, selection)
        return mh_accept(k_accept, log_alpha, new_trace, trace)

    return Kernel(init=_init_trace("regenerate"), step=step)
