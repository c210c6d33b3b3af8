"""A linear-Gaussian state-space model and its exact Kalman filter (shared by the mc tests)."""

import jax.numpy as jnp
import numpy as np

import probgen as pg

A, Q, R = 0.9, 1.0, 0.5  # z_t = A z_{t-1} + N(0, Q);  y_t = z_t + N(0, R);  z_0 = 0


@pg.gen
def lg_step(z, _):
    z = pg.sample("z", pg.Normal(A * z, jnp.sqrt(Q)))
    pg.sample("y", pg.Normal(z, jnp.sqrt(R)))
    return z, None


@pg.gen
def optimal_proposal(z_prev, _, obs):
    """The locally optimal proposal p(z_t | z_{t-1}, y_t)."""
    prior_mean = A * z_prev
    var = 1.0 / (1.0 / Q + 1.0 / R)
    mean = var * (prior_mean / Q + obs["y"] / R)
    pg.sample("z", pg.Normal(mean, jnp.sqrt(var)))
    return None


def simulate(seed: int, num_steps: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, ys = 0.0, []
    for _ in range(num_steps):
        z = A * z + rng.normal() * np.sqrt(Q)
        ys.append(z + rng.normal() * np.sqrt(R))
    return np.asarray(ys, np.float32)


def kalman(ys: np.ndarray):
    """Exact filtering means, variances and log evidence (float64)."""
    m, p, log_z = 0.0, 0.0, 0.0
    means, variances = [], []
    for y in np.asarray(ys, np.float64):
        m_pred, p_pred = A * m, A * A * p + Q
        s = p_pred + R
        log_z += -0.5 * (np.log(2 * np.pi * s) + (y - m_pred) ** 2 / s)
        gain = p_pred / s
        m, p = m_pred + gain * (y - m_pred), (1 - gain) * p_pred
        means.append(m)
        variances.append(p)
    return np.asarray(means), np.asarray(variances), log_z
