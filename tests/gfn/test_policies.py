"""Policies: invalid actions are never drawn, terminal states absorb, trace scores are the
policies' log probabilities, backward probabilities normalize over parents, and modules work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg
from tests.gfn.common import GRID, random_gflownet

ENV = pg.gfn.set_generation(4, lambda x: x.sum(), max_size=3)
GFN, PARAMS = random_gflownet(ENV, 0, learned_backward=True)


def test_samples_respect_masks_and_terminal_states_absorb():
    batch = pg.gfn.sample_trajectories(GFN, PARAMS, jax.random.key(0), 500, epsilon=0.3, temperature=2.0)
    steps = ENV.max_steps
    t = np.arange(steps)

    @jax.jit
    def checks(batch):
        before = jax.tree.map(lambda x: x[:, :-1], batch.states)
        after = jax.tree.map(lambda x: x[:, 1:], batch.states)
        valid = jax.vmap(jax.vmap(lambda s, a: ENV.forward_mask(s)[jnp.minimum(a, ENV.num_actions - 1)]))(
            before, batch.actions)
        terminal = jax.vmap(jax.vmap(ENV.is_terminal))(batch.states)
        # Every step's edge is consistent: the backward action leads back.
        back = jax.vmap(jax.vmap(lambda s, b: ENV.backward_step(s, jnp.minimum(b, ENV.num_backward_actions - 1))))(
            after, batch.backward_actions)
        same = jax.vmap(jax.vmap(lambda a, b: jnp.all(a["members"] == b["members"]) & (a["stopped"] == b["stopped"])))(
            back, before)
        return valid, terminal, same

    valid, terminal, same = checks(batch)
    live = t[None] < np.asarray(batch.length)[:, None]
    assert np.all(np.asarray(valid)[live])                                        # only valid actions
    assert np.all(np.asarray(batch.actions)[~live] == ENV.num_actions)           # no-ops after the end
    assert np.all(np.asarray(batch.backward_actions)[~live] == ENV.num_backward_actions)
    terminal = np.asarray(terminal)
    after_end = np.arange(steps + 1)[None] >= np.asarray(batch.length)[:, None]
    assert np.array_equal(terminal, after_end)                                     # terminal exactly from the end on
    final = batch.final_states
    for leaf, last in zip(jax.tree.leaves(batch.states), jax.tree.leaves(final)):
        idx = np.asarray(batch.length)
        np.testing.assert_array_equal(np.asarray(leaf)[np.arange(500), idx], last)  # the terminal state repeats
    assert np.all(np.asarray(final["members"]).sum(1) <= 3)                      # max_size respected
    assert np.all(np.isfinite(batch.log_reward))
    assert np.all(np.asarray(same)[live])


def test_trace_scores_are_policy_log_probabilities():
    # sample_trajectories(key, 1) is simulate with the first of pg.particle_keys(key, 1): the same trajectory.
    policy = pg.gfn.forward_policy(GFN)
    key = jax.random.key(1)
    trace = jax.jit(lambda k: policy.simulate(k, PARAMS))(pg.particle_keys(key, 1)[0])
    batch = pg.gfn.sample_trajectories(GFN, PARAMS, key, 1)
    np.testing.assert_array_equal(batch.actions[0], trace["steps", "action"])
    log_pf, log_pb = pg.gfn.trajectory_log_probs(GFN, PARAMS, batch)
    np.testing.assert_allclose(trace.score, log_pf.sum(), rtol=1e-5)
    score, _ = jax.jit(policy.assess)(trace.choices, PARAMS)
    np.testing.assert_allclose(score, trace.score, rtol=1e-6)

    # Under exploration the score is that of the exploring policy, step by step.
    @jax.jit
    def explored_scores(key):
        explored = policy.simulate(key, PARAMS, None, 0.25, 1.5)
        states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b])[:-1], ENV.initial_state, explored.retval)

        def step_log_prob(s, a):
            mask = ENV.forward_mask(s)
            lp = pg.gfn.exploration_log_probs(pg.gfn.forward_action_log_probs(GFN, PARAMS, s, None, 1.5), mask, 0.25)
            return jnp.where(a == ENV.num_actions, 0.0, lp[jnp.minimum(a, ENV.num_actions - 1)])

        return explored.score, jax.vmap(step_log_prob)(states, explored["steps", "action"]).sum()

    score, by_hand = explored_scores(jax.random.key(2))
    np.testing.assert_allclose(score, by_hand, rtol=1e-5)
    # Backward: the trace score is log P_B of the walk that sample_backward_trajectories reverses.
    x = batch.final_states
    back = jax.jit(pg.gfn.backward_policy(GFN).simulate)(pg.particle_keys(key, 1)[0], PARAMS,
                                                         jax.tree.map(lambda a: a[0], x))
    reversed_batch = pg.gfn.sample_backward_trajectories(GFN, PARAMS, key, x)
    _, log_pb = pg.gfn.trajectory_log_probs(GFN, PARAMS, reversed_batch)
    np.testing.assert_allclose(back.score, log_pb.sum(), rtol=1e-5)
    assert float(back.score) < 0   # a learned backward policy, several parents on the way


def test_backward_probabilities_normalize_over_parents():
    states = ENV.all_states()
    initial = int(ENV.state_index(ENV.initial_state))
    uniform = pg.gfn.GFlowNet(ENV, GFN.forward_logits)
    for gfn in (GFN, uniform):
        probs = np.exp(np.asarray(jax.vmap(lambda s: pg.gfn.backward_action_log_probs(gfn, PARAMS, s))(states),
                                  np.float64))
        mask = np.asarray(jax.vmap(ENV.backward_mask)(states))
        rows = np.arange(ENV.num_states) != initial
        np.testing.assert_allclose(probs[rows].sum(1), 1.0, rtol=1e-5)
        assert np.all(probs[~mask] == 0)
    forward = np.exp(np.asarray(jax.vmap(lambda s: pg.gfn.forward_action_log_probs(GFN, PARAMS, s))(states)))
    terminal = np.asarray(jax.vmap(ENV.is_terminal)(states))
    np.testing.assert_allclose(forward[~terminal].sum(1), 1.0, rtol=1e-5)
    assert np.all(forward[terminal] == 0)   # a terminal state has no valid action (it takes the no-op)


def test_masked_categorical_draws_and_scores():
    logits = jnp.array([0.3, 5.0, -1.0, 0.0])
    mask = jnp.array([True, False, True, True])
    d = pg.gfn.MaskedCategorical(logits, mask)
    draws = np.asarray(jax.vmap(d.sample)(jax.random.split(jax.random.key(0), 20000)))
    assert not np.any(draws == 1)
    p = np.exp(np.asarray(d.log_probs(), np.float64))
    np.testing.assert_allclose(p[[0, 2, 3]], np.exp([0.3, -1.0, 0.0]) / np.exp([0.3, -1.0, 0.0]).sum(), rtol=1e-5)
    freq = np.bincount(draws, minlength=4) / draws.size
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / draws.size) + 1e-12)
    assert float(d.log_prob(1)) == -np.inf and float(d.log_prob(7)) == -np.inf
    # The site passes validation (finite logits), and gradients at valid entries are finite.
    @pg.gen
    def pick(l):
        return pg.sample("a", pg.gfn.MaskedCategorical(l, mask))

    assert int(pg.validate(lambda k: pick.simulate(k, logits).retval)(jax.random.key(1))) in (0, 2, 3)
    grad = jax.grad(lambda l: pg.gfn.MaskedCategorical(l, mask).log_prob(2))(logits)
    assert np.all(np.isfinite(grad)) and float(grad[1]) == 0.0
    with pytest.raises(pg.ArgumentError, match="mask has shape"):
        pg.gfn.MaskedCategorical(logits, mask[:3])


def test_conditional_policies_and_batched_sampling():
    gfn, params = pg.gfn.init_gflownet(jax.random.key(0), GRID, [16], condition_size=1)
    assert params["forward"][0]["w"].shape == (9, 16) and isinstance(params["log_Z"], list)
    condition = jnp.linspace(0.5, 2.0, 4)[:, None]
    batch = pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 4, condition=condition)
    np.testing.assert_array_equal(batch.condition, condition)
    loss = pg.gfn.trajectory_balance(gfn, num_trajectories=4, condition_sampler=lambda k: jax.random.uniform(k, (1,)))
    assert np.isfinite(float(loss(params, jax.random.key(2))))
    with pytest.raises(pg.ArgumentError, match="leading axis of 4"):
        pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 4, condition=condition[:3])
    # A batch of batches: vmap over keys (and conditions).
    many = jax.vmap(lambda k, c: pg.gfn.sample_trajectories(gfn, params, k, 4, condition=c).length)(
        jax.random.split(jax.random.key(3), 2), jnp.stack([condition, 2 * condition]))
    assert many.shape == (2, 4)
    with pytest.raises(pg.SettingError, match="temperature"):
        pg.gfn.sample_trajectories(gfn, params, jax.random.key(1), 2, temperature=0.0)


def test_flax_nnx_module_as_the_forward_policy():
    nnx = pytest.importorskip("flax.nnx")
    env = GRID
    net = nnx.Sequential(nnx.Linear(8, 16, rngs=nnx.Rngs(0)), jax.nn.relu, nnx.Linear(16, 3, rngs=nnx.Rngs(1)))
    gfn = pg.gfn.GFlowNet(env, lambda module, x: module(x))
    params = {"forward": net, "log_Z": jnp.zeros(())}
    loss = pg.gfn.trajectory_balance(gfn, num_trajectories=32)
    value, grads = jax.value_and_grad(loss)(params, jax.random.key(0))
    assert np.isfinite(float(value)) and type(grads["forward"]) is type(net)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_no_exploration_shortcut_draws_what_the_traced_settings_draw():
    # A static epsilon=0 / temperature=1 samples from the raw logits (no masked log-softmax,
    # no mixture); traced zeros go through the general path. Same key: same trajectories,
    # same per-step log probabilities.
    key = jax.random.key(3)
    fast = pg.gfn.sample_trajectories(GFN, PARAMS, key, 64)
    general = jax.jit(lambda e, t: pg.gfn.sample_trajectories(GFN, PARAMS, key, 64, epsilon=e, temperature=t))(
        jnp.asarray(0.0), jnp.asarray(1.0))
    np.testing.assert_array_equal(np.asarray(fast.actions), np.asarray(general.actions))
    np.testing.assert_array_equal(np.asarray(fast.length), np.asarray(general.length))
    np.testing.assert_allclose(np.asarray(pg.gfn.trajectory_log_probs(GFN, PARAMS, fast)[0]),
                               np.asarray(pg.gfn.trajectory_log_probs(GFN, PARAMS, general)[0]), rtol=1e-6)
