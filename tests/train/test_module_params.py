"""Modules as parameters: an equinox Module and a flax nnx Module go straight into pg.fit,
pg.train.resume and pg.sweep (their non-array leaves ride along), and into a guide."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

# Least squares with a closed-form optimum: y = x @ w_true + b_true exactly.
X = jax.random.normal(jax.random.key(0), (64, 3))
W_TRUE = jnp.array([[1.0], [-2.0], [0.5]])
Y = X @ W_TRUE + 0.3


def _eqx_linear():
    return eqx.nn.Linear(3, 1, key=jax.random.key(1))


def _nnx_linear():
    return nnx.Linear(3, 1, rngs=nnx.Rngs(1))


def _eqx_mlp():
    # Holds functions (the activations) among its leaves: jnp.asarray of those fails.
    return eqx.nn.MLP(3, 1, 8, 1, key=jax.random.key(2))


def _loss(model, key, batch):
    del key
    pred = jax.vmap(model)(batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2)


@pytest.mark.parametrize("make", [_eqx_linear, _nnx_linear], ids=["equinox", "nnx"])
def test_fit_reaches_least_squares_solution(make):
    result = pg.fit(_loss, make(), optax.adam(0.05), jax.random.key(0), data={"x": X, "y": Y},
                    steps=600, progress=False)
    model = result.params
    assert type(model) is type(make())
    pred = jax.vmap(model)(X)
    np.testing.assert_allclose(pred, Y, atol=2e-3)


def test_module_with_function_leaves_trains_and_keeps_them():
    mlp = _eqx_mlp()
    result = pg.fit(_loss, mlp, optax.adam(0.01), jax.random.key(0), data={"x": X, "y": Y},
                    steps=200, progress=False)
    assert result.params.activation is mlp.activation
    assert float(result.history["loss"][-1]) < 0.2 * float(result.history["loss"][0])


def test_resume_module_is_bit_identical(tmp_path):
    opt = optax.adam(0.01)
    data = {"x": X, "y": Y}
    full = pg.fit(_loss, _eqx_mlp(), opt, jax.random.key(3), data=data, steps=20, batch_size=16,
                  progress=False)
    pg.fit(_loss, _eqx_mlp(), opt, jax.random.key(3), data=data, steps=10, batch_size=16,
           checkpoint_dir=tmp_path / "run", progress=False)
    rest = pg.train.resume(_loss, _eqx_mlp(), opt, tmp_path / "run", data=data, steps=20, batch_size=16,
                           progress=False)
    for a, b in zip(jax.tree.leaves(eqx.filter(full.params, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(rest.params, eqx.is_array))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.history["loss"], rest.history["loss"])


def test_sweep_over_module_members():
    def train(learning_rate):
        opt = optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
        return pg.fit(_loss, _eqx_mlp(), opt, jax.random.key(0), data={"x": X, "y": Y}, steps=30)

    result = pg.sweep(train, learning_rate=[0.0, 0.05])
    member = result.member((0,))
    # Learning rate 0 leaves the initial module exactly as it was.
    for a, b in zip(jax.tree.leaves(eqx.filter(member.params, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(_eqx_mlp(), eqx.is_array))):
        np.testing.assert_array_equal(a, b)
    assert member.params.activation is _eqx_mlp().activation
    losses = pg.train.metric_values(result, "loss")
    assert losses[1] < losses[0]


# A conjugate model: z ~ N(0, 1), x | z ~ N(z, 1); observing x = 1 gives z | x ~ N(0.5, 0.5).
@pg.gen
def _model():
    z = pg.sample("z", pg.Normal(0.0, 1.0))
    pg.sample("x", pg.Normal(jnp.full((1,), z), 1.0))


@pg.gen
def _guide(net):
    out = net(jnp.ones(1))
    pg.sample("z", pg.Normal(out[0], jnp.exp(out[1])))


@pytest.mark.parametrize("make", [lambda: eqx.nn.MLP(1, 2, 4, 1, key=jax.random.key(0)),
                                  lambda: nnx.Linear(1, 2, rngs=nnx.Rngs(0))], ids=["equinox", "nnx"])
def test_module_as_guide_parameters_reaches_exact_posterior(make):
    objective = pg.vi.elbo(_model, _guide, num_particles=16)
    result = pg.fit(objective, {"guide": make()}, optax.adam(0.02), jax.random.key(1),
                    data={"x": jnp.ones((1,))}, steps=1500, progress=False)
    out = result.params["guide"](jnp.ones(1))
    # The ELBO's optimum is the exact posterior; the tolerance covers the noise of the
    # last Adam steps (lr 0.02 on a 16-particle gradient).
    np.testing.assert_allclose(float(out[0]), 0.5, atol=0.06)
    np.testing.assert_allclose(float(jnp.exp(out[1])), np.sqrt(0.5), atol=0.06)


def test_trace_with_module_argument_passes_through_jit_and_vmap():
    net = eqx.nn.MLP(1, 2, 4, 1, key=jax.random.key(0))
    trace = jax.jit(lambda k: _guide.simulate(k, net))(jax.random.key(0))  # a Trace holding the module comes out
    assert trace.args[0].activation is net.activation
    traces = jax.vmap(lambda k: _guide.simulate(k, net))(jax.random.split(jax.random.key(1), 3))
    assert traces["z"].shape == (3,)
    score, _ = _guide.assess({"z": trace["z"]}, net)
    np.testing.assert_allclose(score, trace.score, rtol=1e-6)


class _GaussianScore(eqx.Module):
    """The exact VP score of N(mean, scale^2) data, with its functions as leaves."""

    mean: jax.Array
    log_scale: jax.Array
    positive: callable = jnp.exp

    def __call__(self, sde, x, t):
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return -(x - a * self.mean) / (a**2 * self.positive(self.log_scale) ** 2 + s**2)


def test_module_as_score_network_learns_the_exact_score():
    sde = pg.diffusion.vp()
    data = 2.0 + 0.5 * jax.random.normal(jax.random.key(0), (4096, 1))
    loss = pg.diffusion.denoising_score_matching(sde, lambda net, x, t: net(sde, x, t), parameterization="score")
    net = _GaussianScore(jnp.zeros(()), jnp.zeros(()))
    result = pg.fit(loss, net, optax.adam(0.02), jax.random.key(1), data=data, steps=1500, batch_size=256,
                    progress=False)
    assert result.params.positive is jnp.exp
    # DSM's minimizer is the true score of the data: mean 2, scale 0.5 (sample values of the data).
    np.testing.assert_allclose(float(result.params.mean), float(data.mean()), atol=0.05)
    np.testing.assert_allclose(float(jnp.exp(result.params.log_scale)), float(data.std()), atol=0.05)
    score_fn = lambda x, t: result.params(sde, x, jnp.full(x.shape[:1], t, x.dtype))  # noqa: E731
    x = pg.diffusion.reverse_sample(jax.random.key(2), sde, score_fn, (2000, 1), "ddim", 100)
    np.testing.assert_allclose(float(x.mean()), 2.0, atol=4 * 0.5 / np.sqrt(2000) + 0.05)
