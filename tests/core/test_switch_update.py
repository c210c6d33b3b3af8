"""Switch/mix constraints, update and regenerate across branches, scan updates (issue 13).

Ground truth: closed-form mixture posteriors and exact log densities.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import probgen as pg

WEIGHTS = np.array([0.7, 0.3])
LOGITS = jnp.log(jnp.asarray(WEIGHTS))


@pg.gen
def left():
    return pg.sample("a", pg.Normal(0.0, 1.0))


@pg.gen
def right():
    b = pg.sample("b", pg.Normal(3.0, 1.0))
    pg.sample("c", pg.Normal(b, 1.0))
    return b


@pg.gen
def model(logits):
    value = pg.sample("mix", pg.mix(left, right), logits)
    pg.sample("y", pg.Normal(value, 1.0))


# -- 2. a constraint only a branch not taken would visit ----------------------------------------

def test_constraint_of_a_branch_not_taken_makes_the_weight_impossible():
    constraints = pg.ChoiceMap({("mix", "value", "c"): 2.5, "y": 1.0})
    keys = jax.random.split(jax.random.key(0), 4000)
    traces, log_w = jax.jit(jax.vmap(lambda k: model.generate(k, constraints, LOGITS)))(keys)
    component = np.asarray(traces["mix", "component"])
    log_w = np.asarray(log_w)
    # 'c' exists only under the right component: the left one has weight 0.
    assert np.all(np.isneginf(log_w[component == 0]))
    assert np.all(np.isfinite(log_w[component == 1]))
    posterior_right = np.exp(log_w - log_w.max()) @ (component == 1) / np.exp(log_w - log_w.max()).sum()
    assert np.isclose(posterior_right, 1.0, rtol=1e-12)
    # The weight of a right-branch draw is the exact density of the constraints given it.
    b = np.asarray(traces["mix", "value", "b"])[component == 1]
    expected = norm.logpdf(2.5, b, 1.0) + norm.logpdf(1.0, b, 1.0)
    np.testing.assert_allclose(log_w[component == 1], expected, rtol=1e-5, atol=1e-5)
    # The left-branch trace does not hold the constrained value: its 'c' is a placeholder.
    assert np.all(np.isnan(np.asarray(traces["mix", "value", "c"])[component == 0]))


def test_branch_probability_estimate_with_a_shared_address():
    """Both components have 'x'; the importance estimate of P(component | x) matches the truth."""
    @pg.gen
    def narrow():
        return pg.sample("x", pg.Normal(0.0, 0.5))

    @pg.gen
    def broad():
        return pg.sample("x", pg.Normal(1.0, 2.0))

    mixture = pg.mix(narrow, broad)
    keys = jax.random.split(jax.random.key(1), 20000)
    traces, log_w = jax.jit(jax.vmap(lambda k: mixture.generate(k, {("value", "x"): 1.5}, LOGITS)))(keys)
    w = np.exp(np.asarray(log_w, np.float64))
    estimate = (w * (np.asarray(traces["component"]) == 1)).sum() / w.sum()
    joint = WEIGHTS * np.array([norm.pdf(1.5, 0.0, 0.5), norm.pdf(1.5, 1.0, 2.0)])
    truth = joint[1] / joint.sum()
    se = math.sqrt(truth * (1 - truth) / keys.shape[0]) * 2
    assert abs(estimate - truth) < 4 * se


def test_assess_with_a_choice_of_a_branch_not_taken_is_impossible():
    choices = {("mix", "component"): 0, ("mix", "value", "a"): 0.3, ("mix", "value", "c"): 1.0, "y": 0.0}
    log_p, _ = model.assess(choices, LOGITS)
    assert np.isneginf(float(log_p))
    ok, _ = model.assess({("mix", "component"): 0, ("mix", "value", "a"): 0.3, "y": 0.0}, LOGITS)
    expected = math.log(0.7) + norm.logpdf(0.3, 0.0, 1.0) + norm.logpdf(0.0, 0.3, 1.0)
    assert np.isclose(float(ok), expected, atol=1e-5)


# -- 3. regenerate and update across branches with different addresses --------------------------

def _posterior_left(y):
    left_marginal = norm.pdf(y, 0.0, math.sqrt(2.0))
    right_marginal = norm.pdf(y, 3.0, math.sqrt(2.0))
    joint = WEIGHTS * np.array([left_marginal, right_marginal])
    return joint[0] / joint.sum()


@pg.gen
def simple_model(logits):
    value = pg.sample("mix", pg.mix(left, pg.gen(lambda: pg.sample("b", pg.Normal(3.0, 1.0)))), logits)
    pg.sample("y", pg.Normal(value, 1.0))


def test_regenerate_on_a_mixture_component_targets_the_posterior():
    y = 1.0
    move_component = pg.mc.regenerate(pg.select(("mix", "component")))
    move_value = pg.mc.regenerate(pg.select(("mix", "value")))

    def chain(key):
        k0, k1 = jax.random.split(key)
        trace, _ = simple_model.generate(k0, {"y": y}, LOGITS)

        def step(trace, k):
            ka, kb = jax.random.split(k)
            trace, _ = move_component.step(ka, trace)
            trace, _ = move_value.step(kb, trace)
            return trace, None

        trace, _ = jax.lax.scan(step, trace, jax.random.split(k1, 60))
        return trace["mix", "component"]

    num_chains = 3000
    components = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(2), num_chains)))
    truth = _posterior_left(y)
    estimate = np.mean(components == 0)
    se = math.sqrt(truth * (1 - truth) / num_chains)
    assert abs(estimate - truth) < 4 * se, (estimate, truth)


def test_regenerate_log_ratio_is_the_exact_mh_ratio_across_branches():
    trace, _ = simple_model.generate(jax.random.key(0), {("mix", "component"): 0, ("mix", "value", "a"): 0.4,
                                                         "y": 1.0}, LOGITS)
    for seed in range(6):
        new, log_alpha = simple_model.regenerate(jax.random.key(seed), trace, pg.select(("mix", "component")))
        if int(new["mix", "component"]) == 1:
            b = float(new["mix", "value", "b"])
            expected = norm.logpdf(1.0, b, 1.0) - norm.logpdf(1.0, 0.4, 1.0)
        else:
            expected = 0.0
        assert np.isclose(float(log_alpha), expected, atol=1e-5)


def test_update_across_branches_discards_the_old_branch_and_reverses():
    trace, _ = model.generate(jax.random.key(0), {("mix", "component"): 0, ("mix", "value", "a"): 0.4,
                                                  "y": 1.0}, LOGITS)
    new, log_w, discarded = model.update(jax.random.key(1), trace, {("mix", "component"): 1})
    assert int(discarded["mix", "component"]) == 0
    assert float(discarded["mix", "value", "a"]) == pytest.approx(0.4)
    assert np.isnan(float(discarded["mix", "value", "b"]))        # nothing was dropped there
    # weight = log p(new) - log p(old) - log q(fresh draws b, c from the prior)
    b, c = float(new["mix", "value", "b"]), float(new["mix", "value", "c"])
    expected = (math.log(0.3) + norm.logpdf(1.0, b, 1.0)) - (math.log(0.7) + norm.logpdf(0.4, 0, 1)
                                                             + norm.logpdf(1.0, 0.4, 1.0))
    assert np.isclose(float(log_w), expected, atol=1e-4)
    # The reverse move with `discarded` restores the old trace, with the opposite weight
    # up to the fresh draws' prior density.
    back, log_w_back, _ = model.update(jax.random.key(2), new, discarded)
    assert float(back["mix", "value", "a"]) == pytest.approx(0.4)
    assert np.isclose(float(back.score), float(trace.score), atol=1e-5)
    fresh_prior = norm.logpdf(b, 3.0, 1.0) + norm.logpdf(c, b, 1.0)
    assert np.isclose(float(log_w_back), -float(log_w) - fresh_prior, atol=1e-4)


def test_update_with_a_hard_constraint_in_the_branch_not_taken_is_impossible():
    trace, _ = model.generate(jax.random.key(0), {("mix", "component"): 0, "y": 1.0}, LOGITS)
    _, log_w, _ = model.update(jax.random.key(1), trace, {("mix", "value", "c"): 2.0})
    assert np.isneginf(float(log_w))


# -- 7. bad input: index out of range, logits, foreign traces --------------------------------------

def test_switch_index_out_of_range_is_not_clamped():
    sw = pg.switch(left, pg.gen(lambda: pg.sample("a", pg.Normal(5.0, 1.0))))
    tr = jax.jit(lambda i: sw.simulate(jax.random.key(0), i))(jnp.int32(2))
    assert np.isnan(float(tr.score))
    log_p, _ = jax.jit(lambda i: sw.assess({"a": 0.0}, i))(jnp.int32(-1))
    assert np.isnan(float(log_p))
    checked = pg.validate(lambda i: sw.simulate(jax.random.key(0), i).score)
    assert np.isfinite(float(checked(jnp.int32(1))))
    with pytest.raises(pg.ValidationError, match=r"branch index 2 is out of range \[0, 2\)"):
        checked(jnp.int32(2))


def test_mix_with_wrong_number_of_logits_is_an_error():
    with pytest.raises(pg.ConstraintError, match="3 components|2 components"):
        pg.mix(left, right).simulate(jax.random.key(0), jnp.zeros(3))


def test_update_with_a_trace_of_another_gf_is_an_error():
    trace = left.simulate(jax.random.key(0))
    with pytest.raises(pg.ArgumentError, match="trace of 'left'"):
        right.update(jax.random.key(1), trace, {})


def test_switch_with_one_branch_constraint_runs_in_float64():
    with jax.enable_x64(True):
        tr, log_w = pg.mix(left, right).generate(jax.random.key(0), {("value", "c"): 1.0},
                                                 jnp.log(jnp.asarray([0.5, 0.5])))
        assert log_w.dtype == jnp.float64 and tr.score.dtype == jnp.float64


# -- 14. update of a scan trace with a new length ---------------------------------------------

@pg.gen
def ar_step(z, _):
    z = pg.sample("z", pg.Normal(0.9 * z, 1.0))
    pg.sample("y", pg.Normal(z, 0.5))
    return z, None


@pytest.mark.parametrize("new_length", [7, 3])
def test_scan_update_to_a_new_length(new_length):
    old_model = pg.scan(ar_step)
    trace = old_model.simulate(jax.random.key(0), 0.0, jnp.zeros(5))
    new, log_w, discarded = old_model.update(jax.random.key(1), trace, {}, 0.0, jnp.zeros(new_length))
    kept = min(5, new_length)
    np.testing.assert_array_equal(np.asarray(new["z"])[:kept], np.asarray(trace["z"])[:kept])
    assert new["z"].shape == (new_length,)
    if new_length > 5:
        # weight = log p(new) - log p(old) - log q(fresh steps), q the prior of the new steps
        z, y = np.asarray(new["z"], np.float64), np.asarray(new["y"], np.float64)
        fresh = (norm.logpdf(z[5:], 0.9 * z[4:-1], 1.0) + norm.logpdf(y[5:], z[5:], 0.5)).sum()
        expected = float(new.score) - float(trace.score) - fresh
    else:
        expected = float(new.score) - float(trace.score)
        np.testing.assert_array_equal(np.asarray(discarded["z"]), np.asarray(trace["z"]))
    assert np.isclose(float(log_w), expected, atol=1e-4)


# -- project: per-site scores, also inside combinators -------------------------------------------

def test_project_sums_the_selected_sites_inside_scan_and_vmap():
    trace = pg.scan(ar_step).simulate(jax.random.key(4), 0.0, jnp.zeros(6))
    z, y = np.asarray(trace["z"], np.float64), np.asarray(trace["y"], np.float64)
    log_lik = norm.logpdf(y, z, 0.5).sum()
    assert np.isclose(float(trace.gf.project(trace, pg.select("y"))), log_lik, rtol=1e-5)
    z_prev = np.concatenate([[0.0], z[:-1]])
    log_prior = norm.logpdf(z, 0.9 * z_prev, 1.0).sum()
    assert np.isclose(float(trace.gf.project(trace, pg.select("z"))), log_prior, rtol=1e-5)
    # Under a switch, the branch not taken contributes nothing.
    tr, _ = model.generate(jax.random.key(0), {("mix", "component"): 0, ("mix", "value", "a"): 0.4, "y": 1.0},
                           LOGITS)
    value_score = float(model.project(tr, pg.select("mix")))
    assert np.isclose(value_score, math.log(0.7) + norm.logpdf(0.4, 0.0, 1.0), atol=1e-5)


def test_switch_update_across_branches_runs_under_validate():
    # A positive-support site in the branch not taken holds a placeholder (NaN) in the old
    # trace; validation must treat it as absent, not as a value outside the support.
    @pg.gen
    def scale_left():
        return pg.sample("s", pg.HalfNormal(1.0))

    @pg.gen
    def loc_right():
        return pg.sample("m", pg.Normal(0.0, 1.0))

    @pg.gen
    def choose():
        k = pg.sample("k", pg.Bernoulli(probs=0.5))
        return pg.sample("branch", pg.switch(scale_left, loc_right), k.astype(jnp.int32))

    trace, _ = choose.generate(jax.random.key(0), {"k": True})

    def flip(key):
        new, weight, _ = choose.update(key, trace, {"k": False})
        return new["branch", "s"], weight

    value, weight = pg.validate(flip)(jax.random.key(1))
    assert float(value) > 0 and np.isfinite(float(weight))
