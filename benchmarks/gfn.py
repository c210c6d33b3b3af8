"""Benchmark pg.gfn: trajectory-balance training iterations per second on hypergrids, and L1 per second.

Hypergrids of height 8 in 2 and 4 dimensions (Bengio et al. 2021; reward ``r0 = 1e-3, r1 =
0.5, r2 = 2``), forward policy a 2-hidden-layer ReLU MLP of 256 units over the one-hot
coordinates, uniform backward policy, scalar ``log Z``; Adam (1e-3 for the net, 0.1 for
``log Z``); on-policy trajectory balance (no exploration), batches of 16 and 128
trajectories. One training iteration = draw the batch from the current policy + the TB
gradient + the Adam update. Compared:

* probgen: ``pg.gfn.trajectory_balance`` (the loss draws its own trajectories) in a jitted
  step ``(params, opt_state, key) -> ...``; and ``pg.gfn.gflownet_trainer`` (no replay)
  driven by ``pg.run`` in chunks of ``CHUNK`` steps (one ``lax.scan``), what a user running
  many steps calls;
* hand-written JAX (this file, self-contained): the hypergrid as int coordinates, a batched
  ``lax.scan`` rollout of ``max_steps`` steps, then the TB loss from one batched network call
  over every visited state, the same adam; as a step and as a ``lax.scan`` of ``CHUNK`` steps.
  It computes the same loss as probgen: on the same parameters and a probgen batch the two
  losses and gradients agree to float rounding, and its sampler's terminal distribution
  matches ``pg.gfn.exact_terminal_distribution`` (checked below, reported in the notes);
* gfnx (JAX; ``gfnx.HypergridEnvironment``, ``gfnx.utils.forward_rollout``, an equinox MLP
  and the TB loss of its ``baselines/tb_hypergrid.py``, restated here since that script is not
  in the wheel and needs hydra and wandb) and torchgfn (PyTorch on CPU; ``gfn.gym.HyperGrid``,
  ``TBGFlowNet``, ``Sampler``, ``DiscreteUniform`` backward policy, its ``MLP``). Both pin
  numpy < 2, which jax 0.10 excludes, so each runs in its own virtualenv (``.venv-gfnx`` with
  the jax its pins resolve to, ``.venv-torchgfn`` with the CPU wheel of torch 2.13;
  ``--setup`` creates them) as a worker process of this file that never imports probgen and
  answers requests on a pipe: its steps are timed in its process, called round-robin with
  probgen's and the hand-written ones, so load drift hits all alike. A missing virtualenv
  skips that peer with a note.

Then L1 per wall-clock second: each implementation trains on the 2-D grid (batch 16, with
epsilon = 0.05 uniform exploration, since pure on-policy TB can collapse onto one mode; each
library's own exploration) for a fixed number of steps in chunks; after each chunk (timing
paused) the exact terminal distribution of its policy (dynamic programming over the grid) is
compared with ``R / Z`` in L1. Compile time is not counted.

Run: ``.venv/bin/python benchmarks/gfn.py [--quick]``; ``--setup`` installs the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEIGHT, HIDDEN, R0, R1, R2 = 8, 256, 1e-3, 0.5, 2.0
LEARNING_RATE, LOG_Z_LEARNING_RATE = 1e-3, 0.1
CHUNK = 50          # steps per pg.run / lax.scan chunk
PEERS = {
    # name: (virtualenv, packages installed there)
    "gfnx": (".venv-gfnx", ["gfnx==0.0.1", "jax==0.6.2", "jaxlib==0.6.2", "equinox==0.13.8", "optax==0.2.8"]),
    "torchgfn": (".venv-torchgfn", ["torch==2.13.0", "torchgfn==2.4.1"]),
}


def cases(quick: bool) -> list[tuple[int, int]]:
    """(dim, batch) pairs timed."""
    return [(2, 16), (4, 16)] if quick else [(2, 16), (2, 128), (4, 16), (4, 128)]


L1_EPSILON = 0.05   # exploration of the L1 runs: pure on-policy TB can collapse onto one mode


def l1_seeds(quick: bool) -> tuple[int, ...]:
    """Seeds of the L1-per-second runs."""
    return (0,) if quick else (0, 1)


def l1_budget(quick: bool) -> tuple[int, int]:
    """(total steps, steps per checkpoint) of the L1-per-second run (2-D, batch 16)."""
    return (500, 250) if quick else (2000, 250)


# -- exact terminal distribution of any hypergrid policy (numpy; shared with the workers) ------


def grid_cells(dim: int, height: int = HEIGHT) -> np.ndarray:
    """Every cell, ``(height**dim, dim)``; cell ``i`` has coordinate ``d`` = digit ``d`` of ``i`` in base height."""
    index = np.arange(height ** dim)
    return ((index[:, None] // height ** np.arange(dim)) % height).astype(np.int32)


def exact_terminal(action_probs: np.ndarray, dim: int, height: int = HEIGHT) -> np.ndarray:
    """``P(end at cell)`` from ``action_probs`` ``(cells, dim + 1)`` (increment d, then exit), by DP.

    Cells are visited in order of their coordinate sum (a topological order of the DAG).
    """
    cells = grid_cells(dim, height)
    order = np.argsort(cells.sum(1), kind="stable")
    reach = np.zeros(len(cells))
    reach[0] = 1.0
    end = np.zeros(len(cells))
    strides = height ** np.arange(dim)
    for i in order:
        end[i] = reach[i] * action_probs[i, dim]
        for d in range(dim):
            if cells[i, d] < height - 1:
                reach[i + strides[d]] += reach[i] * action_probs[i, d]
    return end


def reward_target(dim: int, height: int = HEIGHT) -> np.ndarray:
    """``R / Z`` over the cells (same order as :func:`grid_cells`), computed here in numpy."""
    a = np.abs(grid_cells(dim, height) / (height - 1) - 0.5)
    reward = R0 + R1 * np.all(a > 0.25, 1) + R2 * np.all((a > 0.3) & (a < 0.4), 1)
    return reward / reward.sum()


# ==============================================================================================
# The main process (.venv): probgen and the hand-written baseline
# ==============================================================================================


def _relu_mlp(params, x):
    import jax

    import probgen as pg

    return pg.flows.mlp(params, x, activation=jax.nn.relu)


def _optimizer(params):
    import optax

    labels = {name: ("log_Z" if name == "log_Z" else "nets") for name in params}
    return optax.multi_transform({"nets": optax.adam(LEARNING_RATE), "log_Z": optax.adam(LOG_Z_LEARNING_RATE)},
                                 labels)


def probgen_setup(dim: int, seed: int = 0):
    """``(env, gfn, params)``: the hypergrid, a GFlowNet with a ReLU MLP forward policy, its parameters."""
    import jax

    import probgen as pg

    env = pg.gfn.hypergrid(dim=dim, height=HEIGHT, r0=R0, r1=R1, r2=R2)
    gfn, params = pg.gfn.init_gflownet(jax.random.key(seed), env, [HIDDEN, HIDDEN])
    return env, gfn._replace(forward_logits=_relu_mlp), params


# -- hand-written JAX ---------------------------------------------------------------------------


def hand_log_reward(position):
    """``log R`` of cells ``(..., dim)`` (integer arithmetic, as the environment defines it)."""
    import jax.numpy as jnp

    span = HEIGHT - 1
    c = jnp.abs(2 * position - span)
    outer = jnp.all(2 * c > span, -1)
    band = jnp.all((5 * c > 3 * span) & (5 * c < 4 * span), -1)
    return jnp.log(R0 + R1 * outer + R2 * band)


def hand_forward_logits(params, position):
    import jax
    import jax.numpy as jnp

    features = jax.nn.one_hot(position, HEIGHT, dtype=jnp.result_type(float))
    return _relu_mlp(params["forward"], features.reshape(*position.shape[:-1], -1))


def hand_forward_mask(position, stopped):
    import jax.numpy as jnp

    grow = position < HEIGHT - 1
    return jnp.concatenate([grow, jnp.ones_like(grow[..., :1])], -1) & ~stopped[..., None]


def hand_rollout(params, key, batch_size: int, dim: int, epsilon: float = 0.0):
    """Rollouts of the policy: the positions and flags before each step and the actions, ``(B, T, ...)``.

    ``dim + 1`` is the no-op of a finished trajectory. With ``epsilon > 0`` each step is, with
    probability ``epsilon``, uniform over the valid actions (the law of probgen's exploration).
    """
    import jax
    import jax.numpy as jnp

    max_steps = dim * (HEIGHT - 1) + 1

    def step(carry, step_key):
        position, stopped = carry
        logits = hand_forward_logits(params, position)
        mask = hand_forward_mask(position, stopped)
        if epsilon:
            step_key, explore_key = jax.random.split(step_key)
            explore = jax.random.uniform(explore_key, (batch_size, 1)) < epsilon
            logits = jnp.where(explore, 0.0, logits)
        action = jax.random.categorical(step_key, jnp.where(mask, logits, -jnp.inf))
        action = jnp.where(stopped, dim + 1, action)
        moved = position + jax.nn.one_hot(action, dim, dtype=position.dtype)   # zero for exit / no-op
        return (moved, stopped | (action == dim)), (position, stopped, action)

    start = (jnp.zeros((batch_size, dim), jnp.int32), jnp.zeros(batch_size, bool))
    _, (positions, flags, actions) = jax.lax.scan(step, start, jax.random.split(key, max_steps))
    return positions.swapaxes(0, 1), flags.swapaxes(0, 1), actions.swapaxes(0, 1)


def hand_tb_loss_on_batch(params, positions, flags, actions, dim: int):
    """Trajectory balance of the batch ``(positions, flags, actions)`` (each ``(B, T, ...)``)."""
    import jax
    import jax.numpy as jnp

    logits = hand_forward_logits(params, positions)
    mask = hand_forward_mask(positions, flags)
    log_probs = jax.nn.log_softmax(jnp.where(mask, logits, -jnp.inf), -1)
    moving = actions <= dim
    log_pf = jnp.take_along_axis(log_probs, jnp.minimum(actions, dim)[..., None], -1)[..., 0]
    log_pf = jnp.where(moving, log_pf, 0.0).sum(-1)
    # Uniform backward policy at the child: 1 after the exit, else 1 / (number of nonzero coordinates).
    child = positions + jax.nn.one_hot(actions, dim, dtype=positions.dtype)
    parents = jnp.sum(child > 0, -1).astype(log_pf.dtype)
    log_pb = jnp.where(moving & (actions < dim), -jnp.log(jnp.maximum(parents, 1.0)), 0.0).sum(-1)
    final = child[:, -1]
    residual = params["log_Z"] + log_pf - hand_log_reward(final) - log_pb
    return jnp.mean(residual ** 2)


def hand_tb_loss(batch_size: int, dim: int, epsilon: float = 0.0):
    import jax

    def loss(params, key):
        batch = hand_rollout(jax.lax.stop_gradient(params), key, batch_size, dim, epsilon)
        return hand_tb_loss_on_batch(params, *batch, dim)

    return loss


# -- steps --------------------------------------------------------------------------------------


def make_step(loss: Callable, optimizer):
    """One jitted training step ``(params, opt_state, key) -> (params, opt_state, loss)``."""
    import jax
    import optax

    def step(params, opt_state, key):
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def make_scan_chunk(step: Callable, num_steps: int):
    """``num_steps`` of a step in one ``lax.scan`` (step ``i`` uses ``fold_in(key, i)``)."""
    import jax

    def chunk(params, opt_state, key):
        def body(carry, i):
            params, opt_state = carry
            params, opt_state, value = step(params, opt_state, jax.random.fold_in(key, i))
            return (params, opt_state), value

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), jax.numpy.arange(num_steps))
        return params, opt_state, values

    return chunk


class Runner(NamedTuple):
    """A compiled training callable as an argument-less call that advances its own state."""

    call: Callable[[], Any]
    compile_s: float
    state: list          # [params, opt_state]: read by the L1 run


def prepare(fn: Callable, params, opt_state, seed: int = 1) -> Runner:
    """Compile ``fn(params, opt_state, key) -> (params, opt_state, out)``; each call takes a fresh key."""
    import jax

    carry = [params, opt_state]
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params, opt_state, jax.random.key(seed)).compile()
    compile_s = time.perf_counter() - start
    keys = iter(list(jax.random.split(jax.random.key(seed), 100_000)))

    def call():
        carry[0], carry[1], value = compiled(carry[0], carry[1], next(keys))
        return value

    return Runner(call, compile_s, carry)


def prepare_trainer(gfn, params, batch_size: int, num_steps: int, seed: int = 1, epsilon: float = 0.0) -> Runner:
    """``pg.gfn.gflownet_trainer`` (fresh trajectories, no replay) driven by ``pg.run`` for ``num_steps`` per call."""
    import jax

    import probgen as pg

    loss = pg.gfn.trajectory_balance(gfn, num_trajectories=batch_size)
    trainer = pg.gfn.gflownet_trainer(loss, gfn, _optimizer(params), num_trajectories=batch_size, epsilon=epsilon)

    def run(state, key):
        state, (_, info) = pg.run(trainer, key, state, num_steps, keep=lambda s: None)
        return state, info.loss

    carry = [trainer.init(params)]
    start = time.perf_counter()
    compiled = jax.jit(run).lower(carry[0], jax.random.key(seed)).compile()
    compile_s = time.perf_counter() - start
    keys = iter(list(jax.random.split(jax.random.key(seed), 10_000)))
    view = [None, None]

    def call():
        carry[0], value = compiled(carry[0], next(keys))
        view[0], view[1] = carry[0].params, carry[0].opt_state
        return value

    return Runner(call, compile_s, view)


def implementations(dim: int, batch_size: int, chunk: int, epsilon: float = 0.0, seed: int = 0):
    """The probgen and hand-written step / chunk functions and the initial parameters and optimizer state."""
    import probgen as pg

    _, gfn, params = probgen_setup(dim, seed)
    optimizer = _optimizer(params)
    pg_step = make_step(pg.gfn.trajectory_balance(gfn, num_trajectories=batch_size, epsilon=epsilon), optimizer)
    hand_step = make_step(hand_tb_loss(batch_size, dim, epsilon), optimizer)
    return gfn, params, optimizer.init(params), {
        "probgen": pg_step, "hand": hand_step, "hand_chunk": make_scan_chunk(hand_step, chunk)}


def jaxpr_size(fn: Callable, *args) -> int:
    """The number of equations in the jaxpr of ``fn(*args)``, sub-jaxprs (scan bodies, ...) included."""
    import jax

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            total += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += count(inner)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


# -- the same loss: checks --------------------------------------------------------------------


def check_same_loss(dim: int, batch_size: int = 64) -> dict:
    """Hand-written vs probgen TB on random (non-uniform) parameters, on one probgen batch.

    Returns the relative difference of the two losses and the largest relative difference
    of their gradients (per leaf, relative to the leaf's largest entry).
    """
    import jax
    import jax.numpy as jnp

    import probgen as pg

    env, gfn, params = _perturbed(dim)
    batch = pg.gfn.sample_trajectories(gfn, params, jax.random.key(4), batch_size)
    pg_loss = pg.gfn.trajectory_balance(gfn, num_trajectories=batch_size)
    positions, flags = batch.states["position"][:, :-1], batch.states["stopped"][:, :-1]
    actions = jnp.where(batch.actions == env.num_actions, dim + 1, batch.actions)

    def hand_on_batch(p):
        return hand_tb_loss_on_batch(p, positions, flags, actions, dim)

    (pg_value, pg_grads), (hand_value, hand_grads) = jax.jit(lambda p: (
        jax.value_and_grad(pg_loss)(p, None, batch), jax.value_and_grad(hand_on_batch)(p)))(params)
    loss_rel = abs(float(pg_value) - float(hand_value)) / abs(float(pg_value))
    grad_rel = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))
                   for a, b in zip(jax.tree.leaves(pg_grads), jax.tree.leaves(hand_grads)))
    return {"loss_rel": loss_rel, "grad_rel": grad_rel}


def check_same_sampler(num: int = 100_000) -> tuple[float, int]:
    """The hand-written sampler's terminal counts (2-D grid, random parameters) vs probgen's exact
    terminal distribution: Pearson's chi-square statistic and its degrees of freedom (their
    mean; a statistic above df + 4 sqrt(2 df) would say the samplers differ)."""
    import jax
    import jax.numpy as jnp

    import probgen as pg

    dim = 2
    _, gfn, params = _perturbed(dim)
    positions, _, actions = jax.jit(lambda k: hand_rollout(params, k, num, dim))(jax.random.key(5))
    final = positions[:, -1] + jax.nn.one_hot(actions[:, -1], dim, dtype=jnp.int32)
    counts = np.bincount(np.asarray(jnp.sum(final * HEIGHT ** jnp.arange(dim), -1)), minlength=HEIGHT ** dim)
    exact = np.asarray(pg.gfn.exact_terminal_distribution(gfn, params), np.float64)[HEIGHT ** dim:]   # stopped
    expected = num * exact / exact.sum()
    return float(np.sum((counts - expected) ** 2 / expected)), HEIGHT ** dim - 1


def _perturbed(dim: int):
    """The benchmark's GFlowNet with parameters moved off the (uniform) initialization."""
    import jax
    import jax.numpy as jnp

    env, gfn, params = probgen_setup(dim)
    rng = np.random.default_rng(3)
    noise = lambda x: x + jnp.asarray(0.1 * rng.normal(size=np.shape(x)), jnp.result_type(x))   # noqa: E731
    return env, gfn, jax.tree.map(noise, params)


# -- timing -------------------------------------------------------------------------------------


def speed_rows(quick: bool, peers: dict[str, "PeerProcess"]) -> list[dict]:
    """Step times: probgen, hand-written and the peers' steps called round-robin (peers in their processes)."""
    import jax

    sys.path.insert(0, HERE)
    from common import interleaved_calls

    repeats = 30 if quick else 150
    chunk_repeats = 3 if quick else 7
    rows, checks, sizes = [], {}, {}
    chi2, df = check_same_sampler()
    for dim, batch_size in cases(quick):
        gfn, params, opt_state, fns = implementations(dim, batch_size, CHUNK)
        steps = {name: prepare(fns[name], params, opt_state) for name in ("probgen", "hand")}
        built = {name: peer.ask(op="build", dim=dim, batch=batch_size) for name, peer in peers.items() if peer.alive}
        timed = {name: peer for name, peer in peers.items() if peer.alive and "error" not in built[name]}
        local = {name: run.call for name, run in steps.items()}
        t = interleaved_steps(local, {}, repeats)                          # A/B: probgen and hand-written
        t_peers = interleaved_steps(local, timed, repeats) if timed else {}   # with the peers' processes
        if dim not in checks:
            checks[dim] = check_same_loss(dim)
        check = checks[dim]
        label = f"TB step {dim}-D B={batch_size}"
        if dim not in sizes:
            key = jax.random.key(0)
            sizes[dim] = tuple(jaxpr_size(fns[name], params, opt_state, key) for name in ("probgen", "hand"))
        notes = (f"compile {steps['probgen'].compile_s:.2f}s vs {steps['hand'].compile_s:.2f}s; jaxpr eqns "
                 f"{sizes[dim][0]} vs {sizes[dim][1]}; same loss on a "
                 f"probgen batch: rel diff {check['loss_rel']:.1e}, grads {check['grad_rel']:.1e}")
        if dim == 2:
            notes += f"; hand sampler vs exact: chi2 {chi2:.1f} on {df} df"
        if t_peers:
            notes += (f"; in the rotation with the peers' processes: {t_peers['probgen'] / t_peers['hand']:.3f} "
                      f"({t_peers['probgen']:.3g}s vs {t_peers['hand']:.3g}s)")
        rows.append(dict(name=f"{label} vs hand JAX", probgen_s=t["probgen"], baseline_s=t["hand"],
                         ratio=t["probgen"] / t["hand"], probgen_it_s=1 / t["probgen"], notes=notes))
        chunks = {"pg.run(gflownet_trainer)": prepare_trainer(gfn, params, batch_size, CHUNK),
                  "hand scan": prepare(fns["hand_chunk"], params, opt_state)}
        tc, _ = interleaved_calls({name: run.call for name, run in chunks.items()}, chunk_repeats, warmup=1)
        pg_c, hand_c = tc["pg.run(gflownet_trainer)"] / CHUNK, tc["hand scan"] / CHUNK
        rows.append(dict(name=f"  {CHUNK}-step chunk {dim}-D B={batch_size}: pg.run(gflownet_trainer) vs hand scan",
                         probgen_s=pg_c, baseline_s=hand_c, ratio=pg_c / hand_c, probgen_it_s=1 / pg_c,
                         notes=f"per step; compile {chunks['pg.run(gflownet_trainer)'].compile_s:.2f}s vs "
                               f"{chunks['hand scan'].compile_s:.2f}s; {chunk_repeats} rounds"))
        for name, peer in peers.items():
            if name not in t_peers:
                why = built.get(name, {}).get("error") or peer.note
                rows.append(dict(name=f"{label} vs {name}", probgen_s=t["probgen"], baseline_s=None, ratio=None,
                                 probgen_it_s=1 / t["probgen"], notes=why))
                continue
            rows.append(dict(name=f"{label} vs {name}", probgen_s=t_peers["probgen"], baseline_s=t_peers[name],
                             ratio=t_peers["probgen"] / t_peers[name], probgen_it_s=1 / t_peers["probgen"],
                             notes=f"{peer.version}; {built[name]['notes']}; first call {built[name]['first']:.2f}s; "
                                   f"its own process, calls interleaved with probgen's, {repeats} rounds"))
    return rows


def interleaved_steps(local: dict[str, Callable[[], Any]], peers: dict[str, "PeerProcess"], repeats: int,
                      warmup: int = 2) -> dict[str, float]:
    """Median seconds per call, local calls and peer calls (timed in the peer's process) round-robin.

    The order rotates every round: a call right after another process's tends to start with
    cold caches, and a fixed order would charge that to the same implementation every time.
    """
    import jax

    def timed(name: str) -> list[float]:
        if name in peers:
            return peers[name].ask(op="time", n=1).get("seconds", [])
        start = time.perf_counter()
        jax.block_until_ready(local[name]())
        return [time.perf_counter() - start]

    names = [*local, *peers]
    for _ in range(warmup):
        for name in names:
            timed(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name] += timed(name)
    return {name: statistics.median(values) for name, values in times.items() if values}


def l1_rows(quick: bool, peers: dict[str, "PeerProcess"]) -> list[dict]:
    """Train on the 2-D grid (batch 16, epsilon 0.05) in chunks; the exact L1 after each, against training seconds."""
    import jax

    import probgen as pg

    total, every = l1_budget(quick)
    dim, batch_size = 2, 16
    curves: dict[str, list] = {"probgen": [], "hand": []}
    compile_s: dict[str, list] = {"probgen": [], "hand": []}
    for seed in l1_seeds(quick):
        gfn, params, opt_state, fns = implementations(dim, batch_size, every, L1_EPSILON, seed)
        runners = {"probgen": prepare_trainer(gfn, params, batch_size, every, seed + 100, L1_EPSILON),
                   "hand": prepare(fns["hand_chunk"], params, opt_state, seed + 100)}
        target = np.asarray(pg.gfn.reward_distribution(gfn.env))[HEIGHT ** dim:]
        exact = jax.jit(lambda p, gfn=gfn: pg.gfn.exact_terminal_distribution(gfn, p))
        for name, runner in runners.items():
            compile_s[name].append(runner.compile_s)
            seconds, curve = 0.0, []
            for done in range(every, total + every, every):
                start = time.perf_counter()
                jax.block_until_ready(runner.call())
                seconds += time.perf_counter() - start
                learned = np.asarray(exact(runner.state[0]))[HEIGHT ** dim:]
                curve.append((done, seconds, float(np.abs(learned - target).sum())))
            curves[name].append(curve)
    for name, peer in peers.items():
        if peer.alive:
            result = peer.ask(op="l1", quick=quick, timeout=1800)
            if result.get("l1"):
                curves[name] = result["l1"]
    rows = []
    for name, runs in curves.items():
        # Mean over seeds at each checkpoint (seconds and L1).
        points = np.mean(np.asarray(runs, dtype=float), axis=0)
        steps, sec, l1 = points[-1]
        finals = ", ".join(f"{run[-1][2]:.3f}" for run in runs)
        compiled = f"; compile {np.mean(compile_s[name]):.2f}s (not counted)" if name in compile_s else ""
        listing = "; ".join(f"{int(n)}: {t:.2f}s L1 {d:.3f}" for n, t, d in points)
        rows.append(dict(name=f"L1 2-D B=16 eps=0.05 {name}", probgen_s=None, baseline_s=sec, ratio=None,
                         probgen_it_s=steps / sec,
                         notes=f"mean over {len(runs)} seed(s); final L1 per seed {finals}{compiled}; "
                               f"steps: seconds, L1 = {listing}"))
    return rows


def main(quick: bool = False) -> list[dict]:
    """Rows (name, probgen_s, baseline_s, ratio, probgen_it_s, notes): ratio < 1 means probgen is faster."""
    peers = {name: PeerProcess(name) for name in PEERS}
    try:
        return speed_rows(quick, peers) + l1_rows(quick, peers)
    finally:
        for peer in peers.values():
            peer.close()


# ==============================================================================================
# Peer workers (run with their own virtualenv's python; never import probgen)
# ==============================================================================================


def _python(peer: str) -> str:
    return os.path.join(ROOT, PEERS[peer][0], "bin", "python")


class PeerProcess:
    """A peer's worker in its own virtualenv, answering one JSON request per line (see :func:`_serve`)."""

    def __init__(self, peer: str):
        import tempfile

        self.name, self.proc, self.version, self.note = peer, None, "", ""
        python = _python(peer)
        if not os.path.exists(python):
            self.note = f"{peer}: {PEERS[peer][0]} missing (run benchmarks/gfn.py --setup)"
            return
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), f"--{peer}-worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        hello = self.ask(op="hello", timeout=300)
        self.version = hello.get("version", "")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ask(self, timeout: float = 600, **request) -> dict:
        """Send one request; its reply, or ``{"error": ...}`` (and the worker is stopped)."""
        import select

        if not self.alive:
            return {"error": self.note or f"{self.name} worker not running"}
        try:
            if request["op"] != "hello":
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else ""
        except (BrokenPipeError, OSError):
            line = ""
        if line.startswith("{"):
            reply = json.loads(line)
            if "error" in reply:
                self.note = f"{self.name} worker: {reply['error']}"
            return reply
        self.close()
        self.log.seek(0)
        lines = self.log.read().strip().splitlines() or [f"no reply within {timeout:.0f}s"]
        errors = [text for text in lines if "Error" in text.split(":")[0]]
        self.note = f"{self.name} worker failed: {(errors or lines)[-1]}"
        return {"error": self.note}

    def close(self) -> None:
        if self.alive:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def _serve(version: str, build: Callable[[int, int], tuple[Callable[[], Any], str]],
           l1_curves: Callable[[bool], list]) -> None:
    """A worker's loop: JSON requests on stdin, one JSON reply per line on the original stdout.

    ``build(dim, batch) -> (call, notes)``: ``call()`` runs one blocking training step.
    Requests: ``build``, ``time`` (``n`` calls of the last built step, each timed here),
    ``l1`` (the L1-per-second curves), ``quit``. Anything the libraries print goes to stderr.
    """
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(obj) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    reply({"version": version})
    call = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "quit":
                break
            if op == "build":
                call, notes = build(request["dim"], request["batch"])
                start = time.perf_counter()
                call()
                reply({"first": time.perf_counter() - start, "notes": notes})
            elif op == "time":
                seconds = []
                for _ in range(request.get("n", 1)):
                    start = time.perf_counter()
                    call()
                    seconds.append(time.perf_counter() - start)
                reply({"seconds": seconds})
            elif op == "l1":
                reply({"l1": l1_curves(request["quick"])})
            else:
                reply({"error": f"unknown request {op!r}"})
        except Exception as err:  # report, keep serving
            reply({"error": f"{type(err).__name__}: {err}"})


def _gfnx_worker() -> None:
    """gfnx 0.0.1: its hypergrid, rollout and the TB loss of its ``baselines/tb_hypergrid.py``."""
    import equinox as eqx
    import gfnx
    import jax
    import jax.numpy as jnp
    import optax

    def build(dim: int, batch_size: int, seed: int = 0, epsilon: float = 0.0):
        env = gfnx.environment.HypergridEnvironment(
            gfnx.GeneralHypergridRewardModule(R0=R0, R1=R1, R2=R2), dim=dim, side=HEIGHT)
        env_params = env.init(jax.random.key(0))
        net = eqx.nn.MLP(env.observation_space.shape[0], env.action_space.n, HIDDEN, depth=2,
                         key=jax.random.key(seed))
        params = {"net": eqx.filter(net, eqx.is_array), "log_Z": jnp.zeros(())}
        static = eqx.partition(net, eqx.is_array)[1]
        optimizer = optax.multi_transform(
            {"nets": optax.adam(LEARNING_RATE), "log_Z": optax.adam(LOG_Z_LEARNING_RATE)},
            {"net": jax.tree.map(lambda _: "nets", params["net"]), "log_Z": "log_Z"})
        num_backward = env.backward_action_space.n

        def policy(key, obs, net_params):
            logits = jax.vmap(eqx.combine(net_params, static))(obs)
            if epsilon:   # gfnx's epsilon-greedy: uniform logits for a random epsilon of the rows
                logits = gfnx.utils.apply_epsilon_greedy_vmap(key, logits, epsilon)
            return logits, {}

        def loss_fn(params, traj):
            # As gfnx's TB baseline: masked log-softmax of the forward logits along the trajectory;
            # uniform P_B from zero backward logits under the environment's backward masks.
            model = eqx.combine(params["net"], static)
            logits = jax.vmap(jax.vmap(model))(traj.obs)
            over_time = lambda f: jax.vmap(f, in_axes=(1, None), out_axes=1)   # noqa: E731
            invalid = over_time(env.get_invalid_mask)(traj.state, env_params)
            log_probs = jax.nn.log_softmax(gfnx.utils.mask_logits(logits, invalid), -1)
            log_pf = jnp.take_along_axis(log_probs, traj.action[..., None], -1)[..., 0]
            log_pf = jnp.where(traj.pad, 0.0, log_pf).sum(1)
            later = jax.tree.map(lambda x: x[:, 1:], traj.state)
            earlier = jax.tree.map(lambda x: x[:, :-1], traj.state)
            back = jax.vmap(jax.vmap(lambda s, a, p: env.get_backward_action(s, a, p, env_params)))(
                later, traj.action[:, :-1], earlier)
            invalid_back = over_time(env.get_invalid_backward_mask)(later, env_params)
            zeros = jnp.zeros(invalid_back.shape[:-1] + (num_backward,), logits.dtype)
            log_pb_all = jax.nn.log_softmax(gfnx.utils.mask_logits(zeros, invalid_back), -1)
            log_pb = jnp.take_along_axis(log_pb_all, back[..., None], -1)[..., 0]
            pad = traj.pad[:, :-1]
            target = jnp.where(pad, 0.0, log_pb + traj.log_gfn_reward[:, :-1]).sum(1)
            return jnp.mean((params["log_Z"] + log_pf - target) ** 2)

        def step(params, opt_state, key):
            traj, _ = gfnx.utils.forward_rollout(key, batch_size, policy, jax.lax.stop_gradient(params["net"]),
                                                  env, env_params)
            value, grads = jax.value_and_grad(loss_fn)(params, traj)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        def action_probs(params):
            cells = jnp.asarray(grid_cells(dim))
            states = gfnx.HypergridEnvState(state=cells, is_terminal=jnp.zeros(len(cells), bool),
                                            is_initial=jnp.all(cells == 0, 1), is_pad=jnp.zeros(len(cells), bool))
            logits = jax.vmap(eqx.combine(params["net"], static))(env.get_obs(states, env_params))
            invalid = env.get_invalid_mask(states, env_params)
            return jax.nn.softmax(gfnx.utils.mask_logits(logits, invalid), -1)

        return params, optimizer.init(params), step, action_probs

    def build_step(dim: int, batch_size: int):
        params, opt_state, step, _ = build(dim, batch_size)
        compiled = jax.jit(step)
        carry = [params, opt_state]
        keys = jax.random.split(jax.random.key(1), 100_000)
        counter = iter(range(100_000))

        def call():
            carry[0], carry[1], value = compiled(carry[0], carry[1], keys[next(counter)])
            jax.block_until_ready(value)

        return call, f"jitted step; rollout {dim * HEIGHT + 1} steps (gfnx's max)"

    def l1_curves(quick: bool) -> list:
        total, every = l1_budget(quick)
        curves = []
        for seed in l1_seeds(quick):
            params, opt_state, step, action_probs = build(2, 16, seed, L1_EPSILON)

            def chunk(params, opt_state, key, step=step):
                def body(carry, i):
                    params, opt_state, value = step(*carry, jax.random.fold_in(key, i))
                    return (params, opt_state), value
                (params, opt_state), values = jax.lax.scan(body, (params, opt_state), jnp.arange(every))
                return params, opt_state, values

            compiled = jax.jit(chunk).lower(params, opt_state, jax.random.key(0)).compile()   # not counted
            probs = jax.jit(action_probs)
            target, seconds, curve = reward_target(2), 0.0, []
            for done in range(every, total + every, every):
                start = time.perf_counter()
                params, opt_state, values = compiled(params, opt_state,
                                                     jax.random.fold_in(jax.random.key(seed + 100), done))
                jax.block_until_ready(values)
                seconds += time.perf_counter() - start
                learned = exact_terminal(np.asarray(probs(params), np.float64), 2)
                curve.append((done, seconds, float(np.abs(learned - target).sum())))
            curves.append(curve)
        return curves

    _serve(f"gfnx {getattr(gfnx, '__version__', '0.0.1')} on jax {jax.__version__}", build_step, l1_curves)


def _torchgfn_worker() -> None:
    """torchgfn 2.4.1 on CPU: ``HyperGrid``, ``TBGFlowNet`` with a ``DiscreteUniform`` backward policy."""
    # This file is benchmarks/gfn.py: keep its folder off the path so that ``gfn`` is torchgfn's package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    import torch
    from gfn.estimators import DiscretePolicyEstimator
    from gfn.gflownet import TBGFlowNet
    from gfn.gym import HyperGrid
    from gfn.preprocessors import KHotPreprocessor
    from gfn.samplers import Sampler
    from gfn.utils.modules import MLP, DiscreteUniform

    import gfn as torchgfn

    # One thread: on this 2-core machine, shared with other work, 2 threads made each step 5-9x
    # slower (medians 0.10-0.12 s vs 0.013-0.019 s, 2-D B=16) than 1; the faster setting is the baseline.
    torch.set_num_threads(1)
    torch.manual_seed(0)

    def build(dim: int, epsilon: float = 0.0):
        env = HyperGrid(ndim=dim, height=HEIGHT, reward_fn_kwargs={"R0": R0, "R1": R1, "R2": R2})
        preprocessor = KHotPreprocessor(height=HEIGHT, ndim=dim)
        forward = MLP(input_dim=preprocessor.output_dim, output_dim=env.n_actions, hidden_dim=HIDDEN,
                      n_hidden_layers=2)
        pf = DiscretePolicyEstimator(forward, env.n_actions, preprocessor=preprocessor, is_backward=False)
        pb = DiscretePolicyEstimator(DiscreteUniform(output_dim=env.n_actions - 1), env.n_actions,
                                     preprocessor=preprocessor, is_backward=True)
        gflownet = TBGFlowNet(pf=pf, pb=pb, init_logZ=0.0)
        optimizer = torch.optim.Adam(gflownet.pf_pb_parameters(), lr=LEARNING_RATE)
        optimizer.add_param_group({"params": gflownet.logz_parameters(), "lr": LOG_Z_LEARNING_RATE})
        sampler = Sampler(estimator=pf)

        def step(batch_size):
            if epsilon:   # the stored log-probs would be the exploring policy's: recompute P_F in the loss
                trajectories = sampler.sample_trajectories(env, n=batch_size, epsilon=epsilon)
            else:
                trajectories = sampler.sample_trajectories(env, n=batch_size, save_logprobs=True)
            optimizer.zero_grad()
            loss = gflownet.loss(env, trajectories, recalculate_all_logprobs=bool(epsilon))
            loss.backward()
            optimizer.step()
            return loss

        def action_probs():
            cells = torch.as_tensor(grid_cells(dim), dtype=torch.long)
            states = env.states_from_tensor(cells)
            with torch.no_grad():
                logits = forward(preprocessor(states))
                logits = logits.masked_fill(~states.forward_masks, -float("inf"))
                return torch.softmax(logits, -1).double().numpy()

        return step, action_probs

    def build_step(dim: int, batch_size: int):
        step, _ = build(dim)
        return (lambda: step(batch_size)), "eager PyTorch CPU step (save_logprobs, recalculate_all_logprobs=False)"

    def l1_curves(quick: bool) -> list:
        total, every = l1_budget(quick)
        curves = []
        for seed in l1_seeds(quick):
            torch.manual_seed(seed)
            step, action_probs = build(2, L1_EPSILON)
            target, seconds, curve = reward_target(2), 0.0, []
            for done in range(every, total + every, every):
                start = time.perf_counter()
                for _ in range(every):
                    step(16)
                seconds += time.perf_counter() - start
                curve.append((done, seconds, float(np.abs(exact_terminal(action_probs(), 2) - target).sum())))
            curves.append(curve)
        return curves

    _serve(f"torchgfn {getattr(torchgfn, '__version__', '2.4.1')}, torch {torch.__version__} "
           f"({torch.get_num_threads()} thread)", build_step, l1_curves)


def setup() -> int:
    """Create ``.venv-gfnx`` and ``.venv-torchgfn`` with the peers (torch: the CPU wheel)."""
    code = 0
    for peer, (venv, packages) in PEERS.items():
        path = os.path.join(ROOT, venv)
        if not os.path.exists(os.path.join(path, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", path], check=True)
        code |= subprocess.run([os.path.join(path, "bin", "pip"), "install", "--quiet", *packages]).returncode
    return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--setup", action="store_true", help="create .venv-gfnx and .venv-torchgfn")
    parser.add_argument("--gfnx-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torchgfn-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        sys.exit(setup())
    elif args.gfnx_worker:
        _gfnx_worker()
    elif args.torchgfn_worker:
        _torchgfn_worker()
    else:
        sys.path.insert(0, HERE)
        from common import print_table

        print_table(main(args.quick), "gfn")
