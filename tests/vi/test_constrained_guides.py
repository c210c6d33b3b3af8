"""Hand-written guides for positive and bounded latents: transformed distributions give the
exact ELBO and its gradient (Gauss–Hermite quadrature), and a guide value outside the
model's support is a ValidationError naming the site under pg.validate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import probgen as pg

Y_REAL = jnp.array([0.5, -1.0, 0.8])
Y_BINARY = jnp.array([1, 0, 1, 1, 0])
NUM_DRAWS = 2000


@pg.gen
def scale_model():
    sigma = pg.sample("sigma", pg.HalfNormal(1.0))
    pg.sample("y", pg.Normal(jnp.zeros(3), sigma))


@pg.gen
def coin_model():
    p = pg.sample("p", pg.Beta(2.0, 2.0))
    pg.sample("y", pg.Bernoulli(probs=jnp.full(5, p)))


@pg.gen
def log_normal_guide(params):
    pg.sample("sigma", pg.LogNormal(params["loc"], jnp.exp(params["log_scale"])))


@pg.gen
def exp_normal_guide(params):
    base = pg.Normal(params["loc"], jnp.exp(params["log_scale"]))
    pg.sample("sigma", pg.dist.TransformedDistribution(base, pg.dist.transforms.ExpTransform()))


@pg.gen
def logit_normal_guide(params):
    base = pg.Normal(params["loc"], jnp.exp(params["log_scale"]))
    pg.sample("p", pg.dist.TransformedDistribution(base, pg.dist.transforms.SigmoidTransform()))


# The exact ELBO by Gauss–Hermite quadrature over the guide's base Normal, written by hand:
# x = T(u), u ~ N(loc, scale); log q(x) = log N(u; loc, scale) - log |T'(u)|.
def _scale_terms(u):
    sigma = jnp.exp(u)
    log_joint = jnp.log(2.0) + norm.logpdf(sigma) + jnp.sum(norm.logpdf(Y_REAL[:, None], 0.0, sigma), axis=0)
    return log_joint, u  # log |d exp(u) / du| = u


def _coin_terms(u):
    p = jax.nn.sigmoid(u)
    heads = jnp.sum(Y_BINARY)
    log_joint = jnp.log(6.0 * p * (1 - p)) + heads * jnp.log(p) + (Y_BINARY.size - heads) * jnp.log1p(-p)
    return log_joint, jnp.log(p) + jnp.log1p(-p)


def _quadrature_elbo(terms, params):
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    scale = jnp.exp(params["log_scale"])
    u = params["loc"] + np.sqrt(2.0) * scale * nodes
    log_joint, log_det = terms(u)
    log_q = norm.logpdf(u, params["loc"], scale) - log_det
    return jnp.sum(weights / np.sqrt(np.pi) * (log_joint - log_q))


CASES = {
    "log_normal": (scale_model, log_normal_guide, _scale_terms, {"y": Y_REAL}, {"loc": 0.5, "log_scale": -1.0}),
    "exp_transform": (scale_model, exp_normal_guide, _scale_terms, {"y": Y_REAL}, {"loc": 0.3, "log_scale": -0.8}),
    "sigmoid_transform": (coin_model, logit_normal_guide, _coin_terms, {"y": Y_BINARY},
                          {"loc": 0.3, "log_scale": -0.6}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformed_guide_gives_the_exact_elbo_and_gradient(case):
    model, guide, terms, data, guide_params = CASES[case]
    guide_params = {k: jnp.asarray(v) for k, v in guide_params.items()}
    objective = pg.vi.elbo(model, guide)

    @jax.jit
    def per_draw(params, keys):
        def one(key):
            return jax.value_and_grad(lambda p: -objective({"guide": p}, key, data))(params)

        return jax.vmap(one)(keys)

    values, grads = per_draw(guide_params, jax.random.split(jax.random.key(0), NUM_DRAWS))
    exact, exact_grad = jax.value_and_grad(lambda p: _quadrature_elbo(terms, p))(guide_params)
    assert values.dtype == guide_params["loc"].dtype
    assert abs(values.mean() - exact) < 4 * values.std() / np.sqrt(NUM_DRAWS)
    for name in guide_params:
        g = grads[name]
        assert abs(g.mean() - exact_grad[name]) < 4 * g.std() / np.sqrt(NUM_DRAWS), name


@pg.gen
def normal_scale_guide(params):
    pg.sample("sigma", pg.Normal(params["loc"], 1.0))  # can draw sigma < 0


@pg.gen
def normal_coin_guide(params):
    pg.sample("p", pg.Normal(params["loc"], 1.0))  # can draw p outside (0, 1)


@pytest.mark.parametrize("make", [lambda m, g: pg.vi.elbo(m, g), lambda m, g: pg.vi.iwae(m, g, num_particles=4)],
                         ids=["elbo", "iwae"])
def test_out_of_support_guide_value_is_a_validation_error_naming_the_site(make):
    objective = make(scale_model, normal_scale_guide)
    params = {"guide": {"loc": jnp.asarray(-3.0)}}
    data = {"y": Y_REAL}

    # Without validation the bound is silently not finite (documented in pg.vi).
    assert not jnp.isfinite(jax.jit(lambda p, k: objective(p, k, data))(params, jax.random.key(0)))
    checked = pg.validate(lambda p, k: objective(p, k, data))
    message = r"sample site 'sigma'.*outside the support of HalfNormal \(positive\)"
    with pytest.raises(pg.ValidationError, match=message):
        checked(params, jax.random.key(0))
    with pytest.raises(pg.ValidationError, match="'sigma'"):
        pg.validate(jax.grad(lambda p, k: objective(p, k, data)))(params, jax.random.key(0))


def test_out_of_bounds_guide_value_and_in_support_guide_under_validation():
    data = {"y": Y_BINARY}
    bad = pg.vi.elbo(coin_model, normal_coin_guide)
    with pytest.raises(pg.ValidationError, match="sample site 'p'.*outside the support of Beta"):
        pg.validate(lambda p, k: bad(p, k, data))({"guide": {"loc": jnp.asarray(-4.0)}}, jax.random.key(0))

    good = pg.vi.elbo(coin_model, logit_normal_guide, num_particles=8)
    params = {"guide": {"loc": jnp.asarray(-4.0), "log_scale": jnp.asarray(0.5)}}
    checked = pg.validate(lambda p, k: good(p, k, data))(params, jax.random.key(1))
    np.testing.assert_allclose(checked, jax.jit(lambda p, k: good(p, k, data))(params, jax.random.key(1)), rtol=1e-5)
