"""GFlowNet-EM: learn a latent-variable model whose posterior over a discrete latent a GFlowNet amortizes.

A model ``p_theta(x, z)`` with a discrete compositional latent ``z`` (an assignment, a parse,
a set), built by an environment's actions, is fitted by expectation-maximization where the
exact E-step (the posterior ``p_theta(z | x)``) is replaced by a GFlowNet ``q_phi(z | x)``: a
policy conditioned on the data point ``x`` (its ``condition``), trained to sample ``z`` in
proportion to the reward ``R(z; x) = p_theta(x, z)``, so that ``Z(x) = p_theta(x)``. The two
steps alternate in one kernel (:func:`gflownet_em`), driven by ``pg.run`` in one ``lax.scan``:

- E-step: one optimizer step of a GFlowNet objective (trajectory balance by default; any
  constructor of :mod:`probgen.gfn.objectives`) on trajectories drawn for a minibatch of
  data points, with the learned log reward ``log p_theta(x, z)`` at the current ``theta``
  (held fixed). Several E-steps per M-step are an option (``e_steps_per_m_step``);
- M-step: one optimizer step of gradient ascent on ``log p_theta(x, z)`` at ``z`` drawn from
  the GFlowNet (``m_samples`` per data point), or, with ``importance_weighted``, on the
  importance-weighted bound ``log mean_k p_theta(x, z_k) / q(z_k | x)``, whose gradient in
  ``theta`` is the self-normalized estimate ``sum_k w_k grad log p_theta(x, z_k)`` of
  ``grad log p_theta(x)``. ``q(z | x)`` is estimated per trajectory by ``P_F(tau) /
  P_B(tau | z)`` (exact when the state graph is a tree).

Each step reports the E loss, the M objective and :func:`log_marginal_estimate`'s estimate of
``log p_theta(x)`` (``log mean_k`` of the importance weights), averaged over the minibatch.

The model is a function ``log_joint(model_params, state, x) -> scalar`` of a terminal state
of the environment and one data point; a ``@pg.gen`` program becomes one with
:func:`log_joint_from_model`. The built-in example is the clustering model of
:mod:`probgen.gfn.clustering`.

Reference: Hu, Malkin, Jain, Everett, Graikos and Bengio, "GFlowNet-EM for learning
compositional latent variable models", ICML 2023.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from probgen.core.checks import static_int
from probgen.core.compiled import compiled_call
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.core.numerics import log_mean_exp
from probgen.core.validation import check
from probgen.gfn.envs import ById
from probgen.gfn.objectives import trajectory_balance
from probgen.gfn.policies import GFlowNet, check_exploration, check_gflownet, forward_action_log_probs
from probgen.gfn.trajectories import sample_trajectories, trajectory_log_probs
from probgen.kernels import Kernel

LogJoint = Callable[[Any, Any, Any], jax.Array]

# The entry under which the E-step's loss sees the model parameters (its learned log reward reads it).
_MODEL_ENTRY = "em_model"


class GFlowNetEMState(NamedTuple):
    """The state of :func:`gflownet_em`.

    Attributes:
      params: the GFlowNet parameters (``phi``).
      model_params: the model parameters (``theta``).
      opt_state: the GFlowNet optimizer's state.
      model_opt_state: the model optimizer's state.
      step: int32, kernel steps taken (M-steps).
    """

    params: Any
    model_params: Any
    opt_state: Any
    model_opt_state: Any
    step: jax.Array


class GFlowNetEMInfo(NamedTuple):
    """What one GFlowNet-EM step reports (each a scalar, means over the minibatch).

    Attributes:
      e_loss: the E-step loss (mean over the step's ``e_steps_per_m_step`` E-steps).
      m_objective: the M-step objective at the step's samples, before the update: the mean
        ``log p_theta(x, z)``, or the importance-weighted bound.
      log_marginal_estimate: ``log mean_k p_theta(x, z_k) P_B(tau_k | z_k) / P_F(tau_k)``
        over the M-step's samples, averaged over the minibatch (a consistent estimate of
        ``log p_theta(x)``, biased low for finitely many samples), before the update.
    """

    e_loss: jax.Array
    m_objective: jax.Array
    log_marginal_estimate: jax.Array


def log_joint_from_model(model: GenerativeFunction, choices: Callable[[Any, Any], Any]) -> LogJoint:
    """``log_joint(model_params, state, x)`` from a ``@pg.gen`` model: its ``assess`` at ``choices(state, x)``.

    The model takes the model parameters as its one argument and must make exactly the
    choices ``choices(state, x)`` names (the latent read off the environment's terminal
    state, and the data point): ``log_joint`` is then ``model.assess(choices(state, x),
    model_params)[0]``, the log joint density. It runs under ``jit``, ``vmap`` and ``grad``
    like any ``assess``.

    Args:
      model: a generative function of ``model_params``.
      choices: ``(state, x) -> ChoiceMap`` (or a dict of choices).

    Returns:
      A ``log_joint`` for :func:`gflownet_em` and :func:`log_marginal_estimate`.

    Raises:
      ArgumentError: ``model`` is not a generative function or ``choices`` not callable.

    Example:
        >>> import jax.numpy as jnp, probgen as pg
        >>> @pg.gen
        ... def model(theta):
        ...     z = pg.sample("z", pg.Categorical(logits=theta["logits"]))
        ...     pg.sample("x", pg.Normal(theta["means"][z], 1.0))
        >>> log_joint = pg.gfn.log_joint_from_model(
        ...     model, lambda state, x: {"z": state["assignment"][0], "x": x})
        >>> theta = {"logits": jnp.zeros(2), "means": jnp.array([-1.0, 1.0])}
        >>> round(float(log_joint(theta, {"assignment": jnp.array([1])}, jnp.array(1.0))), 4)  # log 1/2 + log N(0)
        -1.6121
    """
    if not isinstance(model, GenerativeFunction):
        raise ArgumentError(f"log_joint_from_model: model must be a generative function (@pg.gen), got "
                            f"{type(model).__name__}")
    if not callable(choices):
        raise ArgumentError("log_joint_from_model: choices must be a function (state, x) -> choice map")

    def log_joint(model_params, state, x):
        log_density, _ = model.assess(choices(state, x), model_params)
        return log_density

    log_joint.__name__ = f"log_joint({getattr(model, '__name__', 'model')})"
    return log_joint


# -- checks ----------------------------------------------------------------------------------


def _num_data(data: Any, where: str) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ArgumentError(f"{where}: data is empty; it needs arrays with a leading axis of data points")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) != 1:
        raise ArgumentError(f"{where}: every leaf of data needs the same leading axis (one entry per data point), "
                            f"got shapes {[tuple(jnp.shape(leaf)) for leaf in leaves]}")
    return sizes.pop()


def _first(data: Any) -> Any:
    return jax.tree.map(lambda d: d[0], data)


def _check_log_joint(log_joint: LogJoint, model_params: Any, state: Any, x: Any, where: str) -> None:
    try:
        out = jax.eval_shape(log_joint, model_params, state, x)
    except ArgumentError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as err:
        raise ArgumentError(f"{where}: log_joint(model_params, state, x) fails on a state and one data point: "
                            f"{err}") from err
    if not hasattr(out, "shape") or tuple(out.shape) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        described = (f"shape {tuple(out.shape)} and dtype {out.dtype}" if hasattr(out, "shape")
                     else type(out).__name__)
        raise ArgumentError(f"{where}: log_joint returns {described} for one state and one data point, expected a "
                            "float scalar (log p(x, z))")


def _check_condition(gfn: GFlowNet, params: Any, x: Any, where: str) -> None:
    """The GFlowNet's nets take one data point as their condition."""
    env = gfn.env
    num_features = jax.eval_shape(env.features, env.initial_state).shape[0]
    num_condition = sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(x))

    def probe(params, x):
        out = forward_action_log_probs(gfn, params, env.initial_state, x)
        if gfn.log_partition is not None and isinstance(params, Mapping) and "log_Z" in params:
            flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(x)])
            out = out, gfn.log_partition(params["log_Z"], flat.astype(out.dtype))
        return out

    try:
        jax.eval_shape(probe, params, x)
    except (TypeError, ValueError) as err:
        raise ArgumentError(
            f"{where}: data: the GFlowNet's nets do not take one data point as their condition: the policy input "
            f"is {num_features} features followed by the {num_condition} values of one data point, and a net "
            f"fails on it ({err}); build the GFlowNet with condition_size={num_condition} "
            "(pg.gfn.init_gflownet(..., condition_size=...))") from err


def _as_arrays(tree: Any, name: str, where: str) -> Any:
    """Concrete-dtype arrays (a weakly typed Python float would change type in the first update)."""
    try:
        return jax.tree.map(lambda u: jnp.asarray(u, dtype=jnp.asarray(u).dtype), tree)
    except TypeError as err:
        raise ArgumentError(f"{where}: {name} must be a pytree of arrays (it is carried through lax.scan): {err}") \
            from err


def _repeat(tree: Any, count: int) -> Any:
    return jax.tree.map(lambda u: jnp.repeat(u, count, axis=0), tree)


# -- importance weights ----------------------------------------------------------------------


def _proposals(gfn: GFlowNet, params: Any, key: jax.Array, x: Any, num_samples: int):
    """``num_samples`` latents per data point from the GFlowNet, and their ``log q`` estimates.

    Returns the terminal states and conditions (leading axis ``B * num_samples``, data point
    major) and ``log P_F(tau) - log P_B(tau | z)``, ``(B, num_samples)``.
    """
    num = _num_data(x, "log_marginal_estimate") * num_samples
    condition = _repeat(x, num_samples)
    batch = sample_trajectories(gfn, params, key, num, condition=condition)
    log_pf, log_pb = trajectory_log_probs(gfn, params, batch)
    log_q = (log_pf.sum(-1) - log_pb.sum(-1)).reshape(-1, num_samples)
    return batch.final_states, condition, jax.lax.stop_gradient(log_q)


def _log_joints(log_joint: LogJoint, model_params: Any, states: Any, condition: Any, num_samples: int):
    values = jax.vmap(lambda s, c: jnp.asarray(log_joint(model_params, s, c)))(states, condition)
    check(jnp.all(jnp.isfinite(values)), "log_joint is not finite at a latent the GFlowNet drew (a log reward of "
          "-inf or NaN): every terminal state needs p_theta(x, z) > 0 (got {value})",
          value=values[jnp.argmin(jnp.isfinite(values))])
    return values.reshape(-1, num_samples)


def log_marginal_estimate(
    gfn: GFlowNet,
    params: Any,
    log_joint: LogJoint,
    model_params: Any,
    key: jax.Array,
    data: Any,
    num_samples: int,
) -> jax.Array:
    """Importance-sampling estimate of ``log p_theta(x)`` per data point, the GFlowNet as proposal.

    For each data point, ``log mean_k exp(log p_theta(x, z_k) + log P_B(tau_k | z_k) - log
    P_F(tau_k))`` over ``num_samples`` trajectories ``tau_k`` drawn from the conditional
    forward policy (``P_F / P_B`` is an unbiased trajectory-level estimate of ``q(z | x)``'s
    inverse weight, so ``exp`` of each term has mean ``p_theta(x)``). Consistent, biased low
    for finitely many samples (an IWAE bound in expectation); exact when the GFlowNet samples
    the posterior and ``P_B`` matches it (any ``P_B`` on a tree).

    Args:
      gfn, params: a GFlowNet conditioned on data points, and its parameters.
      log_joint: ``(model_params, state, x) -> scalar``, ``log p_theta(x, z)``.
      model_params: ``theta``.
      key: PRNG key.
      data: data points, leading axis ``M`` (each one a condition of the GFlowNet).
      num_samples: trajectories per data point (static).

    Returns:
      ``(M,)`` estimates.

    Raises:
      ArgumentError: ``log_joint`` does not return a float scalar, or the GFlowNet's nets
        do not take one data point as their condition.

    Example:
        >>> import jax, jax.numpy as jnp, probgen as pg
        >>> env = pg.gfn.cluster_assignment(num_points=2, num_clusters=2)
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [8], condition_size=2)
        >>> theta = {"means": jnp.array([[-1.0], [1.0]]), "log_scale": jnp.array(0.0),
        ...          "log_concentration": jnp.array(0.0)}
        >>> data = jnp.array([[[-1.0], [1.2]], [[0.5], [0.7]]])        # two data points of 2 observations
        >>> estimate = pg.gfn.log_marginal_estimate(gfn, params, pg.gfn.gaussian_clustering_log_joint, theta,
        ...                                          jax.random.key(1), data, 4000)
        >>> estimate.shape
        (2,)
    """
    where = "log_marginal_estimate"
    check_gflownet(gfn, where)
    num_samples = static_int(num_samples, "num_samples", where)
    _num_data(data, where)
    _check_log_joint(log_joint, model_params, gfn.env.initial_state, _first(data), where)
    _check_condition(gfn, params, _first(data), where)
    return compiled_call(_estimate_program, (ById(gfn), log_joint, num_samples), params, model_params, key, data)


def _estimate_program(holder: ById, log_joint: LogJoint, num_samples: int) -> Callable:
    gfn = holder.value

    def run(params, model_params, key, data):
        states, condition, log_q = _proposals(gfn, params, key, data, num_samples)
        log_w = _log_joints(log_joint, model_params, states, condition, num_samples) - log_q
        return jax.vmap(log_mean_exp)(log_w)

    return run


# -- the kernel ------------------------------------------------------------------------------


def gflownet_em(
    gfn: GFlowNet,
    log_joint: LogJoint,
    data: Any,
    optimizer: optax.GradientTransformation,
    model_optimizer: optax.GradientTransformation,
    *,
    objective: Callable[..., Callable] = trajectory_balance,
    batch_size: int = 16,
    num_trajectories: int = 4,
    m_samples: int = 4,
    e_steps_per_m_step: int = 1,
    importance_weighted: bool = False,
    epsilon: Any = 0.0,
    temperature: Any = 1.0,
) -> Kernel:
    """GFlowNet-EM as a kernel: E-steps train a conditional GFlowNet on ``p_theta(x, z)``, M-steps ``theta``.

    Each ``step(key, state)`` takes ``e_steps_per_m_step`` E-steps then one M-step:

    - E-step: draw ``batch_size`` data points (without replacement), ``num_trajectories``
      trajectories for each from the forward policy conditioned on it (explored with
      ``epsilon`` / ``temperature``), and take one ``optimizer`` step on the objective
      ``objective(gfn, log_reward=...)`` over them, whose log reward is ``log_joint(theta,
      z, x)`` at the current ``theta`` (fixed in this step);
    - M-step: draw a fresh minibatch and ``m_samples`` latents per data point from the
      updated GFlowNet (no exploration), and take one ``model_optimizer`` step of ascent on
      the mean ``log p_theta(x, z)`` or, with ``importance_weighted``, on the mean of
      ``log mean_k p_theta(x, z_k) P_B / P_F`` (the importance-weighted M-step).

    ``data`` is closed over (a constant of the compiled program): keep it to a size that
    fits in device memory. The state is a pytree: ``pg.run`` drives the kernel in one
    ``lax.scan``, ``jax.vmap`` batches whole runs (seeds), and orbax checkpoints it.

    Args:
      gfn: a :class:`~probgen.gfn.policies.GFlowNet` whose nets take one data point as
        their condition (``pg.gfn.init_gflownet(..., condition_size=size of one data
        point)``, which also makes ``log Z`` a function of ``x``, as trajectory balance
        needs: ``Z(x) = p_theta(x)``).
      log_joint: ``(model_params, state, x) -> scalar``, ``log p_theta(x, z)`` of a terminal
        state ``z`` and one data point (:func:`log_joint_from_model` makes one from a
        ``@pg.gen`` model; :func:`~probgen.gfn.clustering.gaussian_clustering_log_joint`
        is the built-in example).
      data: the data set, a pytree of arrays with a leading axis of data points.
      optimizer: optax optimizer of the GFlowNet parameters.
      model_optimizer: optax optimizer of the model parameters (``optax.set_to_zero()``
        keeps ``theta`` fixed: only the E-step runs, training the amortized posterior).
      objective: a GFlowNet objective constructor of :mod:`probgen.gfn.objectives`, called
        as ``objective(gfn, log_reward=...)`` (``functools.partial`` sets its other
        settings, e.g. ``lamda``). Its trajectories carry different conditions, so
        ``log_partition_variance`` applies only with ``batch_size=1``.
      batch_size: data points per E-step and per M-step (static, at most the data size).
      num_trajectories: trajectories per data point in an E-step.
      m_samples: latents per data point in an M-step (``K``).
      e_steps_per_m_step: E-steps per kernel step.
      importance_weighted: weight the M-step's samples by ``p_theta(x, z) / q(z | x)``.
      epsilon, temperature: exploration of the E-step's trajectories.

    Returns:
      A :class:`probgen.Kernel`: ``init(params, model_params) -> GFlowNetEMState`` and
      ``step(key, state) -> (state, GFlowNetEMInfo)``.

    Raises:
      SettingError: a count is not a positive int, ``batch_size`` exceeds the data,
        bad exploration settings, or trajectory balance with an unconditional ``log Z``.
      ArgumentError: ``data`` without a common leading axis; at ``init``, ``log_joint``
        does not return a float scalar, or the GFlowNet's nets do not take one data point
        as their condition (each message names the argument).

    Reference: Hu et al., "GFlowNet-EM for learning compositional latent variable models",
    ICML 2023.

    Example (a 3-point, 2-cluster model on 8 data points):
        >>> import jax, jax.numpy as jnp, optax, probgen as pg
        >>> env = pg.gfn.cluster_assignment(num_points=3, num_clusters=2)
        >>> data = jax.random.normal(jax.random.key(0), (8, 3, 1)) * 2.0
        >>> gfn, params = pg.gfn.init_gflownet(jax.random.key(1), env, [16], condition_size=3)
        >>> theta = {"means": jnp.array([[-0.5], [0.5]]), "log_scale": jnp.array(0.0),
        ...          "log_concentration": jnp.array(0.0)}
        >>> em = pg.gfn.gflownet_em(gfn, pg.gfn.gaussian_clustering_log_joint, data, optax.adam(1e-2),
        ...                         optax.adam(1e-2), batch_size=4, num_trajectories=2, m_samples=2)
        >>> state, (_, info) = pg.run(em, jax.random.key(2), em.init(params, theta), 5, keep=lambda s: None)
        >>> info.e_loss.shape, int(state.step), state.model_params["means"].shape
        ((5,), 5, (2, 1))
    """
    where = "gflownet_em"
    check_gflownet(gfn, where)
    if not callable(log_joint):
        raise ArgumentError(f"{where}: log_joint must be a function (model_params, state, x) -> scalar, got "
                            f"{type(log_joint).__name__}")
    if not callable(objective):
        raise ArgumentError(f"{where}: objective must be a GFlowNet objective constructor such as "
                            "pg.gfn.trajectory_balance")
    batch_size = static_int(batch_size, "batch_size", where)
    num_trajectories = static_int(num_trajectories, "num_trajectories", where)
    m_samples = static_int(m_samples, "m_samples", where)
    e_steps = static_int(e_steps_per_m_step, "e_steps_per_m_step", where)
    check_exploration(epsilon, temperature, where)
    num_data = _num_data(data, where)
    if batch_size > num_data:
        raise SettingError(f"{where}: batch_size={batch_size} is larger than the {num_data} data points")
    if getattr(objective, "func", objective) is trajectory_balance and gfn.log_partition is None:
        raise SettingError(f"{where}: trajectory balance needs log Z as a function of the data point (Z(x) = "
                           "p_theta(x)); build the GFlowNet with pg.gfn.init_gflownet(..., condition_size=...)")
    loss_fn = objective(gfn, log_reward=lambda p, state, x: log_joint(p[_MODEL_ENTRY], state, x))
    if not callable(loss_fn):
        raise ArgumentError(f"{where}: objective(gfn, log_reward=...) must return a loss function")
    importance_weighted = bool(importance_weighted)

    def minibatch(key):
        index = jax.random.choice(key, num_data, (batch_size,), replace=False)
        return jax.tree.map(lambda d: d[index], data)

    def init(params: Any, model_params: Any) -> GFlowNetEMState:
        params = _as_arrays(params, "params", where)
        model_params = _as_arrays(model_params, "model_params", where)
        if isinstance(params, Mapping) and _MODEL_ENTRY in params:
            raise ArgumentError(f"{where}: params has an entry {_MODEL_ENTRY!r}, the name under which the E-step's "
                                "loss reads the model parameters; rename it")
        x = _first(data)
        _check_log_joint(log_joint, model_params, gfn.env.initial_state, x, where)
        _check_condition(gfn, params, x, where)
        return GFlowNetEMState(params, model_params, optimizer.init(params), model_optimizer.init(model_params),
                               jnp.zeros((), jnp.int32))

    def e_step(model_params, carry, key):
        params, opt_state = carry
        data_key, draw_key, loss_key = jax.random.split(key, 3)
        condition = _repeat(minibatch(data_key), num_trajectories)
        batch = sample_trajectories(gfn, jax.lax.stop_gradient(params), draw_key, batch_size * num_trajectories,
                                    condition=condition, epsilon=epsilon, temperature=temperature)
        fixed = jax.lax.stop_gradient(model_params)

        def loss(p):
            return loss_fn({**p, _MODEL_ENTRY: fixed}, loss_key, batch)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    def step(key: jax.Array, state: GFlowNetEMState) -> tuple[GFlowNetEMState, GFlowNetEMInfo]:
        e_key, data_key, sample_key = jax.random.split(key, 3)
        (params, opt_state), e_losses = jax.lax.scan(
            lambda carry, k: e_step(state.model_params, carry, k), (state.params, state.opt_state),
            jax.random.split(e_key, e_steps))
        x = minibatch(data_key)
        states, condition, log_q = _proposals(gfn, jax.lax.stop_gradient(params), sample_key, x, m_samples)

        def m_objective(model_params):
            log_p = _log_joints(log_joint, model_params, states, condition, m_samples)
            log_w = log_p - log_q
            estimate = jax.vmap(log_mean_exp)(log_w)
            value = jnp.mean(estimate) if importance_weighted else jnp.mean(log_p)
            return value, jnp.mean(estimate)

        (value, estimate), grads = jax.value_and_grad(m_objective, has_aux=True)(state.model_params)
        ascent = jax.tree.map(jnp.negative, grads)
        updates, model_opt_state = model_optimizer.update(ascent, state.model_opt_state, state.model_params)
        model_params = optax.apply_updates(state.model_params, updates)
        info = GFlowNetEMInfo(jnp.mean(e_losses), value, jax.lax.stop_gradient(estimate))
        return GFlowNetEMState(params, model_params, opt_state, model_opt_state, state.step + 1), info

    return Kernel(init, step)
