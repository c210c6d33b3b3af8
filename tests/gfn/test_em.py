"""GFlowNet-EM on the clustering model, against exact enumeration of the 2^6 assignments: the E-step
learns the exact posterior, joint EM reaches what exact EM reaches, the importance-weighted log p(x)
is consistent, a @pg.gen model gives the same log joint, and bad input is refused by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probgen as pg

N, K, D, M = 6, 2, 1, 16                       # points per data point, clusters, dimension, data points
ENV = pg.gfn.cluster_assignment(N, K)
LOG_JOINT = pg.gfn.gaussian_clustering_log_joint
DTYPE = jnp.result_type(float)


def _data(seed=0):
    # Drawn from the model itself: proportions ~ Dirichlet(0.5), means -1 and 1, scale 0.6.
    rng = np.random.default_rng(seed)
    means = np.array([[-1.0], [1.0]])
    rows = []
    for _ in range(M):
        z = rng.choice(K, N, p=rng.dirichlet(np.full(K, 0.5)))
        rows.append(means[z] + 0.6 * rng.normal(size=(N, D)))
    return jnp.asarray(np.stack(rows), DTYPE)


DATA = _data()
THETA0 = {"means": jnp.asarray([[-0.3], [0.2]], DTYPE), "log_scale": jnp.zeros((), DTYPE),
          "log_concentration": jnp.zeros((), DTYPE)}
STATES = ENV.all_states()
TERMINAL = jax.vmap(ENV.is_terminal)(STATES)


def exact_posterior(theta, x):
    """``p_theta(z | x)`` over the listed states (0 at non-terminal ones) and ``log p_theta(x)``, by enumeration."""
    log_p = jnp.where(TERMINAL, jax.vmap(lambda s: LOG_JOINT(theta, s, x))(STATES), -jnp.inf)
    return jax.nn.softmax(log_p), jax.nn.logsumexp(log_p)


def exact_log_likelihood(theta):
    """The mean over the data points of the exact ``log p_theta(x)``."""
    return jnp.mean(exact_log_marginals(theta, DATA))


@jax.jit
def exact_log_marginals(theta, data):
    """The exact ``log p_theta(x)`` of each data point."""
    return jax.vmap(lambda x: exact_posterior(theta, x)[1])(data)


GFN, PARAMS = pg.gfn.init_gflownet(jax.random.key(0), ENV, [64], condition_size=N * D)


SEEDS, CHUNK = 2, 125


@functools.cache
def _trainer():
    """One GFlowNet-EM kernel and its jitted run of CHUNK steps vmapped over seeds, shared by the tests.

    One compiled program for the whole file: the model's learning rate lives in the optimizer state
    (inject_hyperparams), so the E-step-only phase (learning rate 0: theta fixed) and joint EM run the
    same program, from one seed's state to the next.
    """
    optimizer = optax.multi_transform({"nets": optax.adam(1e-2), "log_Z": optax.adam(0.1)},
                                      {"forward": "nets", "log_Z": "log_Z"})
    model_optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
    em = pg.gfn.gflownet_em(GFN, LOG_JOINT, DATA, optimizer, model_optimizer, batch_size=M, num_trajectories=8,
                            m_samples=8, epsilon=0.05, importance_weighted=True)
    run = jax.jit(jax.vmap(lambda key, state: pg.run(em, key, state, CHUNK, keep=lambda s: None)))
    return em, lambda seed, state: run(jax.random.split(jax.random.key(seed), SEEDS), state)


def _with_model_learning_rate(state, rate):
    hyper = dict(state.model_opt_state.hyperparams)
    hyper["learning_rate"] = jnp.full_like(hyper["learning_rate"], rate)
    return state._replace(model_opt_state=state.model_opt_state._replace(hyperparams=hyper))


def _member(tree, i):
    return jax.tree.map(lambda u: u[i], tree)


@pytest.fixture(scope="module")
def first_chunk():
    """CHUNK E-steps with theta fixed at THETA0 (model learning rate 0), for two seeds at once."""
    em, run = _trainer()
    state = em.init(PARAMS, THETA0)
    return run(0, jax.tree.map(lambda u: jnp.stack([u] * SEEDS), state))


def test_runs_under_jit_and_vmap_over_seeds(first_chunk):
    state, (_, info) = first_chunk
    assert state.step.tolist() == [CHUNK] * SEEDS and info.e_loss.shape == (SEEDS, CHUNK)
    assert state.model_params["means"].dtype == DTYPE and state.params["log_Z"][0]["w"].dtype == DTYPE
    for a, b in zip(jax.tree.leaves(state.model_params), jax.tree.leaves(THETA0)):
        np.testing.assert_array_equal(a, jnp.stack([b] * SEEDS))       # learning rate 0: theta did not move
    assert np.all(np.isfinite(np.asarray(info.log_marginal_estimate)))
    assert not np.allclose(state.params["forward"][0]["w"][0], state.params["forward"][0]["w"][1])
    # the E loss falls (measured, the two seeds: mean of the first 25 steps 14.4 and 15.1, of the last 25
    # 0.050 and 0.048; mean L1 to the exact posteriors by then 0.12 and 0.13)
    e_loss = np.asarray(info.e_loss)
    assert np.all(e_loss[:, -25:].mean(1) < 0.05 * e_loss[:, :25].mean(1))


@pytest.fixture(scope="module")
def e_trained(first_chunk):
    """More E-steps, 500 in all."""
    state, run = first_chunk[0], _trainer()[1]
    for seed in range(1, 500 // CHUNK):
        state, (_, info) = run(seed, state)
    return state, (None, info)


@jax.jit
def _posterior_l1(params, theta):
    def one(x):
        return pg.gfn.l1_distance(pg.gfn.exact_terminal_distribution(GFN, params, x), exact_posterior(theta, x)[0])

    return jax.vmap(one)(DATA)


@pytest.mark.slow  # trains a conditional GFlowNet (500 steps): the float64 pass skips it
def test_e_step_learns_the_exact_posterior(e_trained):
    state, (_, info) = e_trained
    exact = float(exact_log_likelihood(THETA0))
    for i in range(SEEDS):
        l1 = np.asarray(_posterior_l1(_member(state.params, i), THETA0))
        # measured after 500 E-steps, the two seeds: L1 mean 0.032 and 0.027, max 0.044 and 0.037 over the
        # 16 data points
        assert l1.shape == (M,) and l1.max() < 0.15, (i, l1)
        # the step's importance-weighted log p(x), averaged over the data (measured -9.9796 and -9.9808,
        # exact -9.9785)
        assert abs(float(info.log_marginal_estimate[i, -1]) - exact) < 0.05


@pytest.mark.slow
def test_joint_em_reaches_what_exact_em_reaches(e_trained):
    steps, rate = 250, 0.02
    state = _with_model_learning_rate(e_trained[0], rate)
    for seed in range(100, 100 + steps // CHUNK):
        state, (_, info) = _trainer()[1](seed, state)
    assert state.step.tolist() == [500 + steps] * SEEDS

    @jax.jit
    def exact_em(theta):
        # The same M-step optimizer on the exact gradient of the mean log p_theta(x) (exact E-step).
        adam = optax.adam(rate)

        def body(carry, _):
            theta, opt_state = carry
            grads = jax.grad(exact_log_likelihood)(theta)
            updates, opt_state = adam.update(jax.tree.map(jnp.negative, grads), opt_state, theta)
            return (optax.apply_updates(theta, updates), opt_state), None

        (theta, _), _ = jax.lax.scan(body, (theta, adam.init(theta)), None, length=steps)
        return exact_log_likelihood(theta)

    start, target = float(exact_log_likelihood(THETA0)), float(exact_em(THETA0))
    assert target - start > 1.0
    for i in range(SEEDS):
        reached = float(exact_log_likelihood(_member(state.model_params, i)))
        # measured (mean log p(x) per data point): start -9.9785, exact EM -8.60826, GFlowNet-EM -8.60840
        # and -8.60836 (the two seeds)
        assert reached - start > 1.0 and abs(reached - target) < 0.02, (i, reached, target)
        # the step's own estimate of log p(x) tracks the exact value at the learned theta (measured -8.614
        # and -8.605)
        assert abs(float(info.log_marginal_estimate[i, -1]) - reached) < 0.05


def _posterior_gflownet():
    """A GFlowNet whose forward policy is the exact posterior conditional of the next assignment given x.

    Its parameters are ``{"forward": {"theta": model_params, "temperature": T}}``: at ``T = 1`` it
    samples the posterior exactly; at ``T > 1`` the logits are flattened (an imperfect sampler).
    """
    full = STATES["assignment"][np.asarray(TERMINAL)]                     # the K^N complete assignments

    def logits(params, inputs):
        slots = inputs[: N * (K + 1)].reshape(N, K + 1)
        prefix = jnp.argmax(slots, axis=1) - 1
        x = inputs[N * (K + 1):].reshape(N, D)
        t = jnp.minimum(jnp.sum(prefix >= 0), N - 1)
        log_p = jax.vmap(lambda z: LOG_JOINT(params["theta"], {"assignment": z}, x))(full)
        agree = jnp.all((full == prefix) | (prefix < 0), axis=1)
        per_action = [jax.nn.logsumexp(jnp.where(agree & (full[:, t] == a), log_p, -jnp.inf)) for a in range(K)]
        return jnp.stack(per_action) / params["temperature"]

    return pg.gfn.GFlowNet(ENV, logits)


REPS = 1000
POSTERIOR_GFN = _posterior_gflownet()


@pg.validate  # with probgen's run-time checks (one compiled program, shared by two tests)
def _single_sample_log_weights(temperature, theta, key):
    """``REPS`` single-sample log weights for each of the first two data points (num_samples=1 on repeats)."""
    params = {"forward": {"theta": THETA0, "temperature": temperature}}
    out = pg.gfn.log_marginal_estimate(POSTERIOR_GFN, params, LOG_JOINT, theta, key,
                                       jnp.repeat(DATA[:2], REPS, axis=0), 1)
    return out.reshape(2, REPS)


def test_importance_weighted_estimate_is_consistent():
    exact = np.asarray(exact_log_marginals(THETA0, DATA[:2]), np.float64)

    def log_weights(temperature):
        return np.asarray(_single_sample_log_weights(jnp.asarray(temperature, DTYPE), THETA0, jax.random.key(3)),
                          np.float64)

    # The exact-solution sampler (the posterior itself): every weight is p(x), zero variance.
    np.testing.assert_allclose(log_weights(1.0), np.broadcast_to(exact[:, None], (2, REPS)), atol=1e-4)
    # An imperfect sampler (tempered posterior): the weights p(x, z) / q(z | x) have mean p(x) (unbiased).
    # (measured: ratio means 1.005 and 0.949, standard errors 0.059 and 0.054)
    ratio = np.exp(log_weights(4.0) - exact[:, None])
    se = ratio.std(axis=1, ddof=1) / np.sqrt(REPS)
    assert np.all(se > 0.01)                                              # the test has power
    assert np.all(np.abs(ratio.mean(axis=1) - 1.0) < 4 * se), (ratio.mean(axis=1), se)


@pg.gen
def _point(carry, _):
    counts, theta = carry
    z = pg.sample("z", pg.Categorical(logits=jnp.log(counts + jnp.exp(theta["log_concentration"]))))
    pg.sample("x", pg.Normal(theta["means"][z], jnp.exp(theta["log_scale"])))
    return (counts + jax.nn.one_hot(z, K, dtype=counts.dtype), theta), None


@pg.gen
def _polya_urn_model(theta):
    """The clustering model as a program: the Dirichlet-multinomial prior as a Polya urn, point by point."""
    pg.sample("points", pg.scan(_point, length=N), (jnp.zeros(K, DTYPE), theta), None)


def test_a_gen_model_gives_the_closed_form_log_joint():
    log_joint = pg.gfn.log_joint_from_model(
        _polya_urn_model, lambda state, x: {("points", "z"): state["assignment"], ("points", "x"): x})
    theta = dict(THETA0, log_scale=jnp.asarray(0.3, DTYPE), log_concentration=jnp.asarray(-0.5, DTYPE))
    z = {"assignment": jnp.asarray(np.random.default_rng(1).integers(0, K, (5, N)), jnp.int32)}

    @jax.jit
    def both(theta):
        one = jax.vmap(log_joint, (None, 0, None))(theta, z, DATA[0])
        two = jax.vmap(LOG_JOINT, (None, 0, None))(theta, z, DATA[0])
        grads = jax.grad(lambda t: jnp.sum(jax.vmap(log_joint, (None, 0, None))(t, z, DATA[0])))(theta)
        return one, two, grads, jax.grad(lambda t: jnp.sum(jax.vmap(LOG_JOINT, (None, 0, None))(t, z, DATA[0])))(theta)

    one, two, g_one, g_two = both(theta)
    np.testing.assert_allclose(one, two, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_one), jax.tree.leaves(g_two)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(pg.ArgumentError, match="generative function"):
        pg.gfn.log_joint_from_model(LOG_JOINT, lambda s, x: {})


def test_the_clustering_environment_is_well_formed():
    pg.gfn.check_environment(ENV)                            # every edge inverts, indices 0..126, horizon N
    assert ENV.num_states == 2 ** (N + 1) - 1 and int(TERMINAL.sum()) == K ** N
    # The uniform policy's exact terminal distribution is uniform over the K^N assignments.
    flat = pg.gfn.GFlowNet(ENV, lambda p, u: jnp.zeros(K, u.dtype))
    uniform = pg.gfn.exact_terminal_distribution(flat, {"forward": ()})
    np.testing.assert_allclose(uniform, np.where(TERMINAL, 1.0 / K ** N, 0.0), atol=1e-7)


def test_bad_input_is_refused_by_name():
    tb_optimizer = optax.adam(1e-2)

    def make(log_joint=LOG_JOINT, data=DATA, gfn=GFN, **kwargs):
        return pg.gfn.gflownet_em(gfn, log_joint, data, tb_optimizer, tb_optimizer, batch_size=4, **kwargs)

    with pytest.raises(pg.ArgumentError, match=r"log_joint returns shape \(3,\)"):
        make(log_joint=lambda theta, s, x: LOG_JOINT(theta, s, x) * jnp.ones(3)).init(PARAMS, THETA0)
    # Data points of another size than the GFlowNet's condition (2-D points: 12 values, not 6).
    wide = jnp.concatenate([DATA, DATA], axis=-1)
    theta_2d = dict(THETA0, means=jnp.zeros((K, 2), DTYPE))
    with pytest.raises(pg.ArgumentError, match=r"data: .*condition_size=12"):
        make(data=wide).init(PARAMS, theta_2d)
    with pytest.raises(pg.ArgumentError, match=r"data: .*condition_size=12"):
        pg.gfn.log_marginal_estimate(GFN, PARAMS, LOG_JOINT, theta_2d, jax.random.key(0), wide, 2)
    # Data points of 5 observations for a 6-point environment: the model names x.
    with pytest.raises(pg.ArgumentError, match=r"x has shape \(5, 1\), expected \(num_points, D\) = \(6, 1\)"):
        make(data=DATA[:, :5]).init(PARAMS, THETA0)
    with pytest.raises(pg.ArgumentError, match="same leading axis"):
        make(data={"a": DATA, "b": DATA[:3]})
    with pytest.raises(pg.SettingError, match="batch_size=4 is larger than the 3 data points"):
        make(data=DATA[:3])
    unconditional, params = pg.gfn.init_gflownet(jax.random.key(0), ENV, [8])
    with pytest.raises(pg.SettingError, match="log Z as a function of the data point"):
        make(gfn=unconditional)
    with pytest.raises(pg.SettingError, match="m_samples"):
        make(m_samples=0)
    with pytest.raises(pg.ArgumentError, match="'em_model'"):
        make().init(dict(PARAMS, em_model=jnp.zeros(())), THETA0)
    # Under pg.validate, a log joint of NaN or -inf at a drawn latent fails at run time, naming log_joint
    # (a zero concentration makes the Dirichlet-multinomial prior NaN).
    degenerate = dict(THETA0, log_concentration=jnp.asarray(-jnp.inf, DTYPE))
    with pytest.raises(pg.ValidationError, match="log_joint is not finite at a latent the GFlowNet drew"):
        _single_sample_log_weights(jnp.asarray(1.0, DTYPE), degenerate, jax.random.key(0))
