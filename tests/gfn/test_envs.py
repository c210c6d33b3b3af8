"""Environments: the hypergrid reward against exact rational arithmetic, the built-ins pass the
full definition check, a user environment in a few lines, and bad definitions are refused."""

from fractions import Fraction
from itertools import product

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probgen as pg


@pytest.mark.parametrize("dim, height", [(2, 8), (3, 6), (1, 11)])
def test_hypergrid_reward_is_the_papers_with_exact_comparisons(dim, height):
    env = pg.gfn.hypergrid(dim=dim, height=height)
    cells = np.array(list(product(range(height), repeat=dim)), np.int32)
    states = {"position": jnp.asarray(cells), "stopped": jnp.ones(len(cells), bool)}
    got = np.exp(np.asarray(jax.vmap(env.log_reward)(states), np.float64))
    for cell, reward in zip(cells, got):
        a = [abs(Fraction(int(x), height - 1) - Fraction(1, 2)) for x in cell]
        expected = (1e-3 + 0.5 * all(Fraction(1, 4) < v for v in a)
                    + 2.0 * all(Fraction(3, 10) < v < Fraction(2, 5) for v in a))
        assert reward == pytest.approx(expected, rel=1e-5), cell


def test_hypergrids_pass_the_definition_check():
    for env in (pg.gfn.hypergrid(dim=2, height=4), pg.gfn.hypergrid(dim=3, height=3)):
        pg.gfn.check_environment(env)
    with pytest.raises(pg.SettingError, match="height"):
        pg.gfn.hypergrid(dim=2, height=1)
    with pytest.raises(pg.SettingError, match="r0 > 0"):
        pg.gfn.hypergrid(r0=0.0)


def _chain(**overrides):
    """A chain 0 -> 1 -> 2 -> 3 that may stop anywhere; reward n + 1. Overrides break it."""
    settings = dict(
        forward_mask=lambda s: jnp.stack([s["n"] < 3, jnp.bool_(True)]) & ~s["stopped"],
        step=lambda s, a: {"n": s["n"] + (a == 0), "stopped": s["stopped"] | (a == 1)},
        backward_mask=lambda s: jnp.stack([(s["n"] > 0) & ~s["stopped"], s["stopped"]]),
        backward_step=lambda s, b: {"n": s["n"] - (b == 0), "stopped": s["stopped"] & (b == 0)},
        is_terminal=lambda s: s["stopped"],
        log_reward=lambda s: jnp.log1p(s["n"].astype(jnp.result_type(float))),
        num_actions=2, num_backward_actions=2, max_steps=4, exit_action=1, num_states=8,
        all_states=lambda: {"n": jnp.tile(jnp.arange(4, dtype=jnp.int32), 2), "stopped": jnp.arange(8) >= 4},
        state_index=lambda s: s["n"] + 4 * s["stopped"].astype(jnp.int32),
    )
    settings.update(overrides)
    return pg.gfn.environment({"n": jnp.int32(0), "stopped": jnp.bool_(False)}, **settings)


def test_a_user_environment_in_a_few_lines_is_exact():
    env = _chain()
    pg.gfn.check_environment(env)
    # The default edge maps (found by search) invert each other.
    state = {"n": jnp.int32(2), "stopped": jnp.bool_(False)}
    assert int(env.backward_action(state, 0)) == 0 and int(env.backward_action(state, 1)) == 1
    assert int(env.forward_action({"n": jnp.int32(3), "stopped": jnp.bool_(False)}, 0)) == 0
    # Uniform policy: stop at n with probability 2^-(n+1) (n < 3), 1/8 at n = 3.
    gfn, params = pg.gfn.init_gflownet(jax.random.key(0), env, [4])
    p = pg.gfn.exact_terminal_distribution(gfn, params)
    np.testing.assert_allclose(p, [0, 0, 0, 0, 0.5, 0.25, 0.125, 0.125], atol=1e-6)
    np.testing.assert_allclose(pg.gfn.reward_distribution(env)[4:], np.arange(1, 5) / 10, rtol=1e-6)


def test_bad_definitions_are_refused_with_the_culprit_named():
    with pytest.raises(pg.SettingError, match=r"forward_mask returns 3 entries but num_actions=2"):
        _chain(forward_mask=lambda s: jnp.ones(3, bool))
    with pytest.raises(pg.ArgumentError, match=r"backward_mask returns dtype int32"):
        _chain(backward_mask=lambda s: jnp.ones(2, jnp.int32))
    with pytest.raises(pg.ArgumentError, match=r"log_reward returns shape \(1,\), expected \(\)"):
        _chain(log_reward=lambda s: jnp.ones(1))
    with pytest.raises(pg.ArgumentError, match="step returns a state"):
        _chain(step=lambda s, a: {"n": s["n"].astype(jnp.float32), "stopped": s["stopped"]})
    with pytest.raises(pg.ArgumentError, match="is_terminal"):
        _chain(is_terminal=lambda s: s["n"])
    with pytest.raises(pg.SettingError, match="num_states, all_states and state_index"):
        _chain(num_states=None)
    with pytest.raises(pg.SettingError, match="num_actions"):
        _chain(num_actions=0)


def test_value_errors_are_found_by_the_check_and_by_validation_mode():
    # A state that is not terminal has no valid action (n = 2 cannot move nor stop).
    stuck = _chain(forward_mask=lambda s: jnp.stack([s["n"] < 2, s["n"] != 2]) & ~s["stopped"])
    with pytest.raises(pg.ValidationError, match=r"not terminal but has no valid forward action"):
        pg.gfn.check_environment(stuck)
    gfn, params = pg.gfn.init_gflownet(jax.random.key(0), stuck, [4])
    sample = pg.validate(lambda key: pg.gfn.sample_trajectories(gfn, params, key, 64).length)
    with pytest.raises(pg.ValidationError, match="no valid forward action"):
        sample(jax.random.key(1))
    # Trajectories longer than max_steps.
    with pytest.raises(pg.ValidationError, match="longer than max_steps=2"):
        pg.gfn.check_environment(_chain(max_steps=2))
    # A backward step that does not invert the step.
    with pytest.raises(pg.ValidationError, match="does not lead back"):
        pg.gfn.check_environment(_chain(backward_action=lambda s, a: jnp.int32(1)))
    with pytest.raises(pg.SettingError, match="cannot be listed"):
        pg.gfn.check_environment(pg.gfn.hypergrid(dim=2, height=4)._replace(all_states=None))
