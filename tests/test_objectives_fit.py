"""Every trainable objective, passed to ``pg.fit`` as it is, learns the ground truth.

The one loss convention (``loss(params, key, batch)``, DESIGN.md) is checked where it
matters: each objective goes to ``pg.fit`` with no glue function and must reach a known
answer. VI objectives fit a conjugate Normal model's exact posterior (two of them also the
prior mean's maximum-likelihood value, through ``params["model"]``); the score-matching and
interpolant losses learn the exact linear score / velocity of Gaussian data, whose optimum
in the linear family is the data's own mean and (pooled) variance; the SMC objective learns
the transition coefficient of a linear-Gaussian state-space model at its Kalman-filter
maximum likelihood. The tolerances cover the optimizer's jitter at the end of a short run
with a decaying learning rate: about twice the largest error seen over seeds 0-4, in
float32 and float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
import scipy.stats

import probgen as pg

STEPS = 300


def _fit(loss, params, data, learning_rate, steps=STEPS, seed=0):
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    return pg.fit(loss, params, optimizer, jax.random.key(seed), data=data, steps=steps, progress=False).params


# --- VI: x_i ~ N(z, 1), i = 1..4, z ~ N(mu0, 1): the posterior is N((mu0 + sum x) / 5, 1 / 5) ----
# The batch is (observations, xs) with xs of shape (groups, 4): independent copies of the
# problem that share the guide's parameters, which averages the gradient noise
# (single-draw estimators keep a noise floor at the optimum). CUBO's weights w^2 are
# heavy-tailed in many groups, so it fits one.

XS = jnp.array([0.8, 1.2, 0.4, 1.6])
POST_SD = math.sqrt(1 / 5)


def _post_mean(mu0):
    return (mu0 + float(XS.sum())) / 5


def _batch(groups):
    xs = jnp.tile(XS, (groups, 1))
    return {"x": xs}, xs


@pg.gen
def model(xs):
    z = pg.sample("z", pg.Normal(jnp.zeros(xs.shape[:1]), 1.0))
    pg.sample("x", pg.Normal(jnp.broadcast_to(z[:, None], xs.shape), 1.0))


@pg.gen
def prior_model(mu0, xs):
    """The model with a learned prior mean (``params["model"]``)."""
    z = pg.sample("z", pg.Normal(jnp.full(xs.shape[:1], mu0), 1.0))
    pg.sample("x", pg.Normal(jnp.broadcast_to(z[:, None], xs.shape), 1.0))


@pg.gen
def guide(p, xs):
    pg.sample("z", pg.Normal(jnp.full(xs.shape[:1], p["mu"]), jnp.exp(p["log_sd"])))


@pg.gen
def hier_guide(p, xs):
    """q(z) = ∫ N(a; 0, 1) N(z; mu + c a, s²) da = N(mu, c² + s²): the posterior is in the family."""
    a = pg.sample("a", pg.Normal(jnp.zeros(xs.shape[:1]), 1.0))
    pg.sample("z", pg.Normal(p["mu"] + p["c"] * a, jnp.exp(p["log_s"])))


@pg.gen
def reverse(kept, p, xs):
    """r(a; z), linear-Gaussian like the exact q(a | z)."""
    pg.sample("a", pg.Normal(p["d"] * (kept["z"] - p["mu"]), jnp.exp(p["log_r"])))


GUIDE = {"guide": {"mu": 0.0, "log_sd": 0.0}}
WITH_MODEL = {"model": 0.0, "guide": {"mu": 0.0, "log_sd": 0.0}}
HIER = {"guide": {"mu": 0.0, "c": 0.5, "log_s": math.log(0.5), "d": 0.0, "log_r": 0.0}}

# name: (objective, initial params, groups, learning rate, tolerance)
VI_CASES = {
    "elbo": (lambda: pg.vi.elbo(prior_model, guide, num_particles=16), WITH_MODEL, 32, 0.1, 0.02),
    "iwae": (lambda: pg.vi.iwae(model, guide, 4), GUIDE, 32, 0.05, 0.06),
    "renyi": (lambda: pg.vi.renyi(model, guide, 0.5, 4), GUIDE, 32, 0.1, 0.03),
    "cubo": (lambda: pg.vi.cubo(model, guide, 64), GUIDE, 1, 0.05, 0.05),
    "rws": (lambda: pg.vi.rws(prior_model, guide, 16), WITH_MODEL, 32, 0.05, 0.025),
    "forward_chi2": (lambda: pg.vi.forward_chi2(model, guide, 16), GUIDE, 32, 0.05, 0.01),
    "hvi": (lambda: pg.vi.hvi(model, hier_guide, "z", reverse), HIER, 32, 0.05, 0.04),
    "iwhvi": (lambda: pg.vi.iwhvi(model, hier_guide, "z", reverse, 8), HIER, 32, 0.05, 0.04),
    "diwhvi": (lambda: pg.vi.diwhvi(model, hier_guide, "z", reverse, 4, 4), HIER, 32, 0.05, 0.065),
}


def _vi_errors(params):
    """Errors of the fitted posterior mean and sd (and the prior mean, if learned) against the exact ones."""
    g = params["guide"]
    sd = jnp.sqrt(g["c"] ** 2 + jnp.exp(2 * g["log_s"])) if "c" in g else jnp.exp(g["log_sd"])
    mu0 = float(XS.mean()) if "model" in params else 0.0  # the maximum-likelihood prior mean
    errors = {"mean": float(g["mu"]) - _post_mean(mu0), "sd": float(sd) - POST_SD}
    if "model" in params:
        errors["mu0"] = float(params["model"]) - mu0
    return errors


@pytest.mark.parametrize("name", list(VI_CASES))
def test_vi_objective_fits_the_exact_posterior(name):
    make, params, groups, learning_rate, tolerance = VI_CASES[name]
    errors = _vi_errors(_fit(make(), params, _batch(groups), learning_rate))
    print(name, errors)
    assert all(abs(e) < tolerance for e in errors.values()), errors


# VIMCO on discrete latents (REINFORCE with leave-one-out baselines): 32 independent
# b_i ~ Bernoulli(0.3), x_i ~ N(2 b_i, 1), every x_i = 1.5, and a guide with one shared logit
# (sharing averages the gradient noise over the 32 latents).
X_COIN = jnp.full((32,), 1.5)
_JOINT = [0.7 * scipy.stats.norm.pdf(1.5, 0.0, 1.0), 0.3 * scipy.stats.norm.pdf(1.5, 2.0, 1.0)]
COIN_POSTERIOR = _JOINT[1] / sum(_JOINT)  # p(b_i = 1 | x_i), about 0.54


@pg.gen
def coin_model():
    b = pg.sample("b", pg.Bernoulli(probs=jnp.full(X_COIN.shape, 0.3)))
    pg.sample("x", pg.Normal(2.0 * b, 1.0))


@pg.gen
def coin_guide(logit):
    pg.sample("b", pg.Bernoulli(logits=jnp.full(X_COIN.shape, logit)))


def test_vimco_fits_the_exact_discrete_posterior():
    fitted = _fit(pg.vi.vimco(coin_model, coin_guide, 4), {"guide": -2.0}, {"x": X_COIN}, 0.1)
    prob = float(jax.nn.sigmoid(fitted["guide"]))
    print("vimco", prob, COIN_POSTERIOR)
    assert abs(prob - COIN_POSTERIOR) < 0.05


# --- score matching and interpolants: Gaussian data, models exact in a linear family ----------

DATA = jnp.array([1.0, -0.5]) + 0.6 * jax.random.normal(jax.random.key(42), (2000, 2))
DATA_MEAN = np.asarray(DATA).mean(0)
DATA_VAR = float(np.asarray(DATA).var(0).mean())  # pooled over dimensions (one shared variance)
SDE = pg.diffusion.vp()
GAUSS = {"mean": jnp.zeros(2), "log_var": jnp.zeros(())}


def _dsm_eps(params, x, t):
    """eps-prediction of data N(mean, var I) noised by the VP SDE: sigma(t) (x - alpha m) / (alpha² var + sigma²)."""
    a, s = SDE.alpha(t)[:, None], SDE.sigma(t)[:, None]
    return s * (x - a * params["mean"]) / (a**2 * jnp.exp(params["log_var"]) + s**2)


def _score(params, x):
    return -(x - params["mean"]) / jnp.exp(params["log_var"])


def _velocity(params, t, x):
    """E[x1 - x0 | x_t = x] for x0 ~ N(0, I), x1 ~ N(m, v I) on the linear interpolant."""
    v = jnp.exp(params["log_var"])
    gain = (t * v - (1 - t)) / ((1 - t) ** 2 + t**2 * v)
    return params["mean"] + gain * (x - t * params["mean"])


NOISY = pg.flows.noisy_interpolant()


def _interpolant_score(params, t, x):
    """The score of x_t = (1 - t) x0 + t x1 + gamma(t) z: N(t m, ((1-t)² + t² v + gamma²) I)."""
    variance = (1 - t) ** 2 + t**2 * jnp.exp(params["log_var"]) + NOISY.gamma(t) ** 2
    return -(x - t * params["mean"]) / variance


GAUSSIAN_CASES = {
    "denoising_score_matching": (lambda: pg.diffusion.denoising_score_matching(SDE, _dsm_eps), 0.02),
    "sliced_score_matching": (lambda: pg.diffusion.sliced_score_matching(_score), 1e-3),  # deterministic loss
    "velocity_matching": (lambda: pg.flows.velocity_matching(pg.flows.linear_interpolant(), _velocity), 0.01),
    "interpolant_score_matching": (lambda: pg.flows.interpolant_score_matching(NOISY, _interpolant_score), 0.02),
}


@pytest.mark.parametrize("name", list(GAUSSIAN_CASES))
def test_score_and_velocity_losses_learn_the_exact_linear_field(name):
    make, tolerance = GAUSSIAN_CASES[name]
    fitted = _fit(make(), GAUSS, DATA, 0.05)
    mean, var = np.asarray(fitted["mean"]), float(jnp.exp(fitted["log_var"]))
    print(name, mean, DATA_MEAN, var, DATA_VAR)
    np.testing.assert_allclose(mean, DATA_MEAN, atol=tolerance)
    assert abs(var - DATA_VAR) < tolerance


# --- SMC objective: z_t = a z_{t-1} + N(0, 1), y_t = z_t + N(0, 0.5²); learn a -----------------

T = 20
R = 0.25  # observation variance


def _simulate_observations(a, seed=0):
    rng = np.random.default_rng(seed)
    z, ys = 0.0, []
    for _ in range(T):
        z = a * z + rng.normal()
        ys.append(z + math.sqrt(R) * rng.normal())
    return np.array(ys)


YS = _simulate_observations(0.8)


def _kalman_log_likelihood(a):
    mean, var, total = 0.0, 0.0, 0.0
    for y in YS:
        mean, var = a * mean, a**2 * var + 1.0
        s = var + R
        total += scipy.stats.norm.logpdf(y, mean, math.sqrt(s))
        gain = var / s
        mean, var = mean + gain * (y - mean), (1 - gain) * var
    return total


A_MLE = scipy.optimize.minimize_scalar(lambda a: -_kalman_log_likelihood(a), bounds=(-2, 2), method="bounded").x


def _ssm(params):
    @pg.gen
    def step(z, _):
        z = pg.sample("z", pg.Normal(params["a"] * z, 1.0))
        pg.sample("y", pg.Normal(z, math.sqrt(R)))
        return z, None

    return pg.scan(step, length=T), 0.0, None


def _locally_optimal_proposal(params):
    """p(z_t | z_{t-1}, y_t): precision 1 + 1/R, mean (a z_{t-1} + y_t / R) / (1 + 1/R)."""
    @pg.gen
    def proposal(z, _, obs):
        precision = 1.0 + 1.0 / R
        pg.sample("z", pg.Normal((params["a"] * z + obs["y"] / R) / precision, 1.0 / math.sqrt(precision)))

    return proposal, ()


def test_smc_objective_learns_the_kalman_maximum_likelihood():
    loss = pg.mc.smc_objective(_ssm, num_particles=32, proposal_fn=_locally_optimal_proposal)
    fitted = _fit(loss, {"a": 0.0}, {"y": jnp.asarray(YS)}, 0.05)
    print("smc_objective", float(fitted["a"]), A_MLE)
    assert abs(float(fitted["a"]) - A_MLE) < 0.01


# --- the same loss under jax.grad and pg.sweep; direct forms equal the rich forms -------------


def test_the_same_loss_takes_jax_grad_and_pg_sweep():
    # Sliced score matching with Rademacher projections is deterministic for a linear score:
    # loss = mean_i [-D / v + |x_i - m|^2 / (2 v^2)], with a closed-form gradient.
    loss = pg.diffusion.sliced_score_matching(_score)
    params = {"mean": jnp.array([0.3, 0.1]), "log_var": jnp.asarray(0.2)}
    grads = jax.jit(jax.grad(loss))(params, jax.random.key(0), DATA)
    v, centered = math.exp(0.2), np.asarray(DATA) - np.array([0.3, 0.1])
    np.testing.assert_allclose(grads["mean"], -centered.mean(0) / v**2, rtol=1e-4)
    np.testing.assert_allclose(grads["log_var"], 2 / v - (centered**2).sum(1).mean() / v**2, rtol=1e-4)

    def train(learning_rate):
        return _fit(loss, GAUSS, DATA, learning_rate)

    result = pg.sweep(train, learning_rate=[0.03, 0.05])
    np.testing.assert_allclose(result.results["mean"], np.tile(DATA_MEAN, (2, 1)), atol=1e-3)
    np.testing.assert_allclose(np.exp(result.results["log_var"]), [DATA_VAR] * 2, atol=1e-3)


def test_interpolant_direct_forms_equal_the_rich_forms():
    key, x0, x1 = jax.random.key(0), DATA[:64] - 1.0, DATA[64:128]
    params = {"mean": jnp.array([0.5, 0.0]), "log_var": jnp.asarray(-0.3)}
    interp = pg.flows.linear_interpolant()

    @jax.jit
    def both(params, key, x0, x1):
        return (pg.flows.velocity_matching(interp, _velocity)(params, key, (x0, x1)),
                pg.flows.velocity_loss(lambda t, x: _velocity(params, t, x), key, x0, x1, interp),
                pg.flows.interpolant_score_matching(NOISY, _interpolant_score)(params, key, (x0, x1)),
                pg.flows.score_loss(lambda t, x: _interpolant_score(params, t, x), key, x0, x1, NOISY))

    velocity_direct, velocity_rich, score_direct, score_rich = both(params, key, x0, x1)
    assert float(velocity_direct) == float(velocity_rich) and float(score_direct) == float(score_rich)
    with pytest.raises(pg.SettingError, match="velocity_matching: batch"):
        pg.flows.velocity_matching(interp, _velocity)(params, key, (x0, x1, x1))
