"""A linear-Gaussian state-space model and its exact Kalman filter (shared by the mc tests)."""

import jax.numpy as jnp
import numpy as np

import probgen as pg

A, Q, R = 0.9, 1.0, 0.5  # z_t = A z_{t-1} + N(0, Q);  y_t = z_t + N(0, R);  z_0 = 0


def make_model(a: float):
    """The step GF ``z_t ~ N(a z_{t-1}, Q), y_t ~ N(z_t, R)`` and its locally optimal proposal."""

    @pg.gen
    def lg_step(z, _):
        z = pg.sample("z", pg.Normal(a * z, jnp.sqrt(Q)))
        pg.sample("y", pg.Normal(z, jnp.sqrt(R)))
        return z, None

    @pg.gen
    def optimal_proposal(z_prev, _, obs):
        """The locally optimal proposal p(z_t | z_{t-1}, y_t)."""
        var = 1.0 / (1.0 / Q + 1.0 / R)
        mean = var * (a * z_prev / Q + obs["y"] / R)
        pg.sample("z", pg.Normal(mean, jnp.sqrt(var)))
        return None

    return lg_step, optimal_proposal


lg_step, optimal_proposal = make_model(A)


def simulate(seed: int, num_steps: int, a: float = A) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, ys = 0.0, []
    for _ in range(num_steps):
        z = a * z + rng.normal() * np.sqrt(Q)
        ys.append(z + rng.normal() * np.sqrt(R))
    return np.asarray(ys, np.float32)


def kalman(ys: np.ndarray, a: float = A, observed=None):
    """Exact filtering means, variances and log evidence (float64); ``observed[t] = False``
    skips the update at step ``t`` (a missing observation)."""
    m, p, log_z = 0.0, 0.0, 0.0
    means, variances = [], []
    observed = np.ones(len(ys), bool) if observed is None else np.asarray(observed, bool)
    for y, seen in zip(np.asarray(ys, np.float64), observed):
        m_pred, p_pred = a * m, a * a * p + Q
        if not seen:
            m, p = m_pred, p_pred
            means.append(m)
            variances.append(p)
            continue
        s = p_pred + R
        log_z += -0.5 * (np.log(2 * np.pi * s) + (y - m_pred) ** 2 / s)
        gain = p_pred / s
        m, p = m_pred + gain * (y - m_pred), (1 - gain) * p_pred
        means.append(m)
        variances.append(p)
    return np.asarray(means), np.asarray(variances), log_z


def rts(means: np.ndarray, variances: np.ndarray, a: float = A):
    """Exact smoothing means and variances (Rauch-Tung-Striebel) from the Kalman filter's."""
    smoothed_means, smoothed_vars = list(means[-1:]), list(variances[-1:])
    for m, p in zip(means[-2::-1], variances[-2::-1]):
        p_pred = a * a * p + Q
        gain = a * p / p_pred  # Cov(z_t, z_{t+1} | y_{1:t}) / Var(z_{t+1} | y_{1:t})
        smoothed_means.append(m + gain * (smoothed_means[-1] - a * m))
        smoothed_vars.append(p + gain**2 * (smoothed_vars[-1] - p_pred))
    return np.asarray(smoothed_means[::-1]), np.asarray(smoothed_vars[::-1])
