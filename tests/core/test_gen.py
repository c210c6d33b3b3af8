"""The four GF methods against ground truth: scipy densities, exact evidence, exact ratios."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import probgen as pg

MU0, S0, S = 0.5, 1.5, 0.8


@pg.gen
def normal_normal(mu0):
    z = pg.sample("z", pg.Normal(mu0, S0))
    pg.sample("x", pg.Normal(z, S))
    return z


@pg.gen
def many_families(p, rate, conc):
    a = pg.sample("a", pg.Normal(1.0, 2.0))
    b = pg.sample("b", pg.Gamma(2.0, rate))
    c = pg.sample("c", pg.Beta(2.0, 3.0))
    d = pg.sample("d", pg.Poisson(rate))
    e = pg.sample("e", pg.Categorical(probs=p))
    f = pg.sample("f", pg.Dirichlet(conc))
    g = pg.sample("g", pg.Bernoulli(probs=0.3))
    return a, b, c, d, e, f, g


def test_assess_matches_scipy():
    p = jnp.array([0.2, 0.5, 0.3])
    conc = jnp.array([1.0, 2.0, 3.0])
    choices = {"a": 0.3, "b": 1.7, "c": 0.25, "d": 3, "e": 2, "f": jnp.array([0.2, 0.3, 0.5]), "g": 1}
    logp, _ = jax.jit(many_families.assess)(choices, p, 1.5, conc)
    expected = (
        st.norm(1.0, 2.0).logpdf(0.3)
        + st.gamma(2.0, scale=1 / 1.5).logpdf(1.7)
        + st.beta(2.0, 3.0).logpdf(0.25)
        + st.poisson(1.5).logpmf(3)
        + np.log(0.3)
        + st.dirichlet(np.array([1.0, 2.0, 3.0])).logpdf(np.array([0.2, 0.3, 0.5]))
        + np.log(0.3)
    )
    assert float(logp) == pytest.approx(expected, rel=1e-5)


def test_simulate_score_equals_assess_of_its_choices():
    tr = jax.jit(many_families.simulate)(
        jax.random.key(3), jnp.array([0.2, 0.5, 0.3]), 1.5, jnp.array([1.0, 2.0, 3.0])
    )
    logp, retval = many_families.assess(tr.choices, *tr.args)
    assert float(logp) == pytest.approx(float(tr.score), rel=1e-6)
    assert float(retval[0]) == float(tr["a"])


def test_generate_weights_average_to_exact_evidence():
    x = 1.3
    keys = jax.random.split(jax.random.key(0), 20000)
    _, log_w = jax.jit(jax.vmap(lambda k: normal_normal.generate(k, {"x": x}, MU0)))(keys)
    w = np.exp(np.asarray(log_w, dtype=np.float64))
    evidence = st.norm(MU0, np.sqrt(S0**2 + S**2)).pdf(x)
    se = w.std() / np.sqrt(w.size)
    assert abs(w.mean() - evidence) < 4 * se
    # fully constrained: weight is the joint density; unconstrained: weight is 0
    tr, log_w_full = normal_normal.generate(jax.random.key(1), {"x": x, "z": 0.2}, MU0)
    assert float(log_w_full) == pytest.approx(float(tr.score), rel=1e-6)
    _, log_w_none = normal_normal.generate(jax.random.key(1), {}, MU0)
    assert float(log_w_none) == 0.0


def test_generate_draws_from_prior_for_unconstrained():
    keys = jax.random.split(jax.random.key(2), 4000)
    trs, _ = jax.vmap(lambda k: normal_normal.generate(k, {"x": 0.0}, MU0))(keys)
    z = np.asarray(trs["z"])
    assert abs(z.mean() - MU0) < 4 * S0 / np.sqrt(z.size)
    assert np.all(np.asarray(trs["x"]) == 0.0)


def test_update_weight_is_exact_density_ratio():
    tr, _ = normal_normal.generate(jax.random.key(0), {"x": 1.0}, MU0)
    new_tr, log_w, discarded = jax.jit(normal_normal.update)(jax.random.key(1), tr, pg.ChoiceMap({"z": -0.4}))
    joint = lambda z: st.norm(MU0, S0).logpdf(z) + st.norm(z, S).logpdf(1.0)
    assert float(log_w) == pytest.approx(joint(-0.4) - joint(float(tr["z"])), rel=1e-5, abs=1e-5)
    assert float(new_tr["z"]) == pytest.approx(-0.4)
    assert float(new_tr["x"]) == 1.0
    assert float(discarded["z"]) == float(tr["z"])
    assert discarded.addresses() == [("z",)]


def test_update_with_new_args_reweights_same_choices():
    tr, _ = normal_normal.generate(jax.random.key(0), {"x": 1.0}, MU0)
    new_tr, log_w, discarded = normal_normal.update(jax.random.key(1), tr, {}, 2.0)
    z = float(tr["z"])
    assert float(new_tr["z"]) == z
    expected = st.norm(2.0, S0).logpdf(z) - st.norm(MU0, S0).logpdf(z)
    assert float(log_w) == pytest.approx(expected, rel=1e-5)
    assert discarded.is_empty()


@pg.gen
def branching(flag):
    k = pg.sample("k", pg.Bernoulli(probs=flag))
    return pg.sample("y", pg.switch(inner_a, inner_b), k)


@pg.gen
def inner_a():
    return pg.sample("u", pg.Normal(0.0, 1.0))


@pg.gen
def inner_b():
    return pg.sample("v", pg.Normal(3.0, 1.0))


def test_update_changing_branch_draws_new_address_and_accounts_for_it():
    tr, _ = branching.generate(jax.random.key(0), {"k": 0}, 0.5)
    assert float(tr["k"]) == 0
    new_tr, log_w, _ = branching.update(jax.random.key(1), tr, {"k": 1})
    v = float(new_tr["y", "v"])
    assert not np.isnan(v)
    # Fresh v is drawn from its prior, so log w = log p(new) - log p(old) - log q(v) = log p(k=1) - [log p(k=0) + log p(u)]
    u = float(tr["y", "u"])
    expected = np.log(0.5) - (np.log(0.5) + st.norm(0, 1).logpdf(u))
    assert float(log_w) == pytest.approx(expected, rel=1e-5)


def test_grad_through_simulate_and_assess():
    # Pathwise gradient of a reparameterized draw: d/dmu E[z] = 1 exactly per sample.
    dz = jax.grad(lambda mu: normal_normal.simulate(jax.random.key(0), mu)["z"])(0.3)
    assert float(dz) == pytest.approx(1.0)
    dlogp = jax.grad(lambda mu: normal_normal.assess({"z": 1.0, "x": 0.0}, mu)[0])(0.3)
    assert float(dlogp) == pytest.approx((1.0 - 0.3) / S0**2, rel=1e-5)


def test_vmap_over_keys_and_args():
    keys = jax.random.split(jax.random.key(0), 5)
    trs = jax.vmap(normal_normal.simulate)(keys, jnp.arange(5.0))
    assert trs["z"].shape == (5,) and trs.score.shape == (5,)


def test_nested_gf_choices_are_hierarchical_and_scores_add():
    @pg.gen
    def outer():
        a = pg.sample("first", normal_normal, 0.0)
        b = pg.sample("second", normal_normal, a)
        return b

    tr = outer.simulate(jax.random.key(0))
    assert tr.choices.addresses() == [("first", "x"), ("first", "z"), ("second", "x"), ("second", "z")]
    s1, _ = normal_normal.assess(tr.choices["first"], 0.0)
    s2, _ = normal_normal.assess(tr.choices["second"], tr["first", "z"])
    assert float(tr.score) == pytest.approx(float(s1 + s2), rel=1e-6)


def test_custom_distribution_and_distrax():
    import distrax

    class Laplace(pg.Distribution):
        has_rsample = True

        def __init__(self, loc, scale):
            self.loc, self.scale = loc, scale

        def sample(self, key):
            return self.loc + self.scale * jax.random.laplace(key, jnp.shape(self.loc))

        def log_prob(self, x):
            return -jnp.abs(x - self.loc) / self.scale - jnp.log(2 * self.scale)

    @pg.gen
    def model():
        a = pg.sample("a", Laplace(0.0, 2.0))
        b = pg.sample("b", distrax.Normal(a, 1.0))
        return b

    logp, _ = model.assess({"a": 1.0, "b": 0.5})
    expected = st.laplace(0, 2).logpdf(1.0) + st.norm(1.0, 1.0).logpdf(0.5)
    assert float(logp) == pytest.approx(expected, rel=1e-5)
    grad = jax.grad(lambda k: model.simulate(k)["b"], allow_int=True)
    tr = jax.jit(model.simulate)(jax.random.key(0))
    assert tr.choices.addresses() == [("a",), ("b",)]
    del grad


def test_vector_sites_sum_batch_log_probs():
    @pg.gen
    def model():
        return pg.sample("w", pg.Normal(jnp.zeros(4), 1.0))

    logp, _ = model.assess({"w": jnp.ones(4)})
    assert float(logp) == pytest.approx(4 * st.norm(0, 1).logpdf(1.0), rel=1e-6)
