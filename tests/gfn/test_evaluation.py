"""Evaluation: the dynamic program against brute-force enumeration of trajectories and against
samples (chi-square), exact targets and log Z in closed form, distances, modes, and the
importance-sampling estimates of log Z and log P_T(x) within their standard errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

import probgen as pg
from tests.gfn.common import GRID, GRID_GFN, GRID_PARAMS
from tests.gfn.common import random_gflownet as _random_policy


def _brute_force(env, gfn, params):
    """P_T by enumerating every action sequence from s_0 (numpy; probabilities from the raw logits)."""
    @jax.jit
    def tables(params):
        states = env.all_states()
        logits = jax.vmap(lambda s: gfn.forward_logits(params["forward"], env.features(s)))(states)
        actions = jnp.arange(env.num_actions)
        child = jax.vmap(lambda s: jax.vmap(lambda a: env.state_index(env.step(s, a)))(actions))(states)
        return logits, jax.vmap(env.forward_mask)(states), jax.vmap(env.is_terminal)(states), child

    logits, mask, terminal, child = map(np.asarray, tables(params))
    logits = logits.astype(np.float64)
    probs = np.where(mask, np.exp(logits - logits.max(1, keepdims=True)), 0.0)
    probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-300)
    result = np.zeros(env.num_states)
    count = 0

    def walk(i, p):
        nonlocal count
        if terminal[i]:
            result[i] += p
            count += 1
            return
        for a in np.flatnonzero(mask[i]):
            walk(child[i, a], p * probs[i, a])

    walk(int(env.state_index(env.initial_state)), 1.0)
    return result, count


@pytest.mark.parametrize("env", [
    GRID,
    pg.gfn.bit_sequence(jnp.array([[0, 1, 1, 0]]), word_size=1),            # prepend + append: a DAG with
    pg.gfn.set_generation(4, lambda x: x.sum()),                              # parallel edges; sets: |x|! orders
], ids=["hypergrid", "bit_sequence", "set_generation"])
def test_dynamic_program_equals_brute_force_enumeration(env):
    gfn, params = (GRID_GFN, GRID_PARAMS) if env is GRID else _random_policy(env, 3)
    exact, count = _brute_force(env, gfn, params)
    assert count > env.num_states   # many trajectories per terminal state
    np.testing.assert_allclose(pg.gfn.exact_terminal_distribution(gfn, params), exact, atol=1e-6)


def test_dynamic_program_matches_sampled_trajectories():
    p = np.asarray(pg.gfn.exact_terminal_distribution(GRID_GFN, GRID_PARAMS), np.float64)
    p = p / p.sum()   # float32 rounding
    num = 2048
    batch = pg.gfn.sample_trajectories(GRID_GFN, GRID_PARAMS, jax.random.key(7), num)
    counts = np.rint(np.asarray(pg.gfn.empirical_distribution(GRID, batch.final_states), np.float64) * num)
    assert counts.sum() == num
    assert counts[p == 0].sum() == 0      # never a state of probability 0 (non-terminal)
    big = p * num >= 5     # chi-square needs expected counts of 5 or more: pool the rest
    small = (p > 0) & ~big
    observed, expected = counts[big], p[big] * num
    if small.any():
        observed, expected = np.append(observed, counts[small].sum()), np.append(expected, p[small].sum() * num)
    assert big.sum() >= 8
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_targets_and_log_partition_in_closed_form():
    env = pg.gfn.hypergrid(dim=2, height=8)
    # 64 cells at r0, 16 outer-corner cells add r1, the 4 sharp modes add r2.
    z = 64 * 1e-3 + 16 * 0.5 + 4 * 2.0
    np.testing.assert_allclose(pg.gfn.exact_log_partition(env), np.log(z), rtol=1e-6)
    np.testing.assert_allclose(pg.gfn.exact_log_partition(env, reward_exponent=2.0),
                               np.log(48 * 1e-6 + 12 * 0.501 ** 2 + 4 * 2.501 ** 2), rtol=1e-6)
    target = np.asarray(pg.gfn.reward_distribution(env))
    assert target[:64].sum() == 0 and np.isclose(target.sum(), 1.0)
    np.testing.assert_allclose(np.sort(target[64:])[-4:], 2.501 / z, rtol=1e-5)
    # Sets larger than max_size are listed but unreachable: no target mass.
    sets = pg.gfn.set_generation(3, lambda x: -x.sum(), max_size=1)
    target = np.asarray(pg.gfn.reward_distribution(sets))
    np.testing.assert_allclose(target[[8, 9, 10, 12]], np.array([1, np.e, np.e, np.e]) / (1 + 3 * np.e), rtol=1e-6)
    assert target.sum() == pytest.approx(1.0)


def test_distances_and_modes():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    np.testing.assert_allclose(pg.gfn.l1_distance(p, q), np.abs(p - q).sum(), rtol=1e-5)
    np.testing.assert_allclose(pg.gfn.jensen_shannon_divergence(p, q), distance.jensenshannon(p, q) ** 2, rtol=1e-4)
    assert float(pg.gfn.jensen_shannon_divergence(p, p)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(pg.ArgumentError):
        pg.gfn.l1_distance(p, q[:3])
    env = pg.gfn.hypergrid(dim=2, height=8)
    cells = jnp.array([[1, 1], [1, 1], [6, 1], [3, 3], [1, 6]], jnp.int32)
    x = {"position": cells, "stopped": jnp.ones(5, bool)}
    assert int(pg.gfn.num_modes_found(env, x, jnp.log(2.5))) == 3
    assert int(pg.gfn.num_modes_found(env, x, jnp.log(0.4))) == 3
    assert int(pg.gfn.num_modes_found(env, x, -100.0)) == 4


def test_log_partition_estimate_is_unbiased_for_z():
    # Uniform policies (the initial parameters): bounded importance weights.
    _, params = pg.gfn.init_gflownet(jax.random.key(0), GRID, [16], learned_backward=True)
    num = 2048
    estimate = pg.gfn.log_partition_estimate(GRID_GFN, params, jax.random.key(11), num)
    # The same draw by hand, for the standard error of the mean weight.
    batch = pg.gfn.sample_trajectories(GRID_GFN, params, jax.random.key(11), num)
    log_pf, log_pb = pg.gfn.trajectory_log_probs(GRID_GFN, params, batch)
    weights = np.exp(np.asarray(batch.log_reward + log_pb.sum(-1) - log_pf.sum(-1), np.float64))
    np.testing.assert_allclose(np.exp(float(estimate)), weights.mean(), rtol=1e-4)
    z = np.exp(float(pg.gfn.exact_log_partition(GRID)))
    assert abs(weights.mean() - z) < 4 * weights.std() / np.sqrt(num)


@pytest.mark.slow  # a long statistical run: the float64 pass skips it
def test_terminal_log_prob_estimate():
    # A tree (append only): one trajectory per object, the estimate is exact.
    tree = pg.gfn.bit_sequence(jnp.array([[0, 1, 1, 0]]), word_size=2, prepend=False)
    gfn, params = _random_policy(tree, 5)
    p = pg.gfn.exact_terminal_distribution(gfn, params)
    full = {"words": jnp.array([[0, 0], [1, 2], [3, 1]], jnp.int32)}
    estimate = pg.gfn.terminal_log_prob_estimate(gfn, params, jax.random.key(0), full, 2)
    np.testing.assert_allclose(np.exp(estimate), p[jax.vmap(tree.state_index)(full)], rtol=1e-5)
    # A DAG: unbiased for P_T(x) (mean of P_F / P_B over backward trajectories).
    p = np.asarray(pg.gfn.exact_terminal_distribution(GRID_GFN, GRID_PARAMS))
    deep = np.asarray(GRID.all_states()["position"]).sum(1) >= 3          # several paths lead there
    cell = np.asarray(GRID.all_states()["position"])[np.argmax(np.where(deep, p, 0.0))]
    x = {"position": jnp.asarray(cell[None], jnp.int32), "stopped": jnp.ones(1, bool)}
    num = 2048
    estimate = pg.gfn.terminal_log_prob_estimate(GRID_GFN, GRID_PARAMS, jax.random.key(1), x, num)
    repeated = jax.tree.map(lambda a: jnp.repeat(a, num, axis=0), x)
    batch = pg.gfn.sample_backward_trajectories(GRID_GFN, GRID_PARAMS, jax.random.key(1), repeated)
    log_pf, log_pb = pg.gfn.trajectory_log_probs(GRID_GFN, GRID_PARAMS, batch)
    weights = np.exp(np.asarray(log_pf.sum(-1) - log_pb.sum(-1), np.float64))
    np.testing.assert_allclose(np.exp(float(estimate[0])), weights.mean(), rtol=1e-4)
    exact = float(p[GRID.state_index(jax.tree.map(lambda a: a[0], x))])
    assert abs(weights.mean() - exact) < 4 * weights.std() / np.sqrt(num)
    with pytest.raises(pg.SettingError, match="cannot be listed"):
        pg.gfn.exact_terminal_distribution(GRID_GFN._replace(env=GRID._replace(all_states=None)), GRID_PARAMS)
