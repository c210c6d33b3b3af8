"""Shared by the GFlowNet tests: exact solutions as tabular parameters (ground truth), and one
small hypergrid with a random MLP policy, shared so that its compiled programs are reused.

With the uniform backward policy, the state flows of the exact GFlowNet solve
``F(s) = sum over children c of F(c) P_B(s | c)`` with ``F(x) = R(x)`` at terminal states,
and ``P_F(c | s) = F(c) P_B(s | c) / F(s)``; ``F(s_0) = Z``. Computed here in numpy by
sweeping the listed states from the deepest layer up (no probgen code involved beyond the
environment's own functions).
"""

import jax
import jax.numpy as jnp
import numpy as np

import probgen as pg


def tabular_gflownet(env, learned_backward=False):
    """A GFlowNet whose nets are lookup tables indexed by the state (found from its features)."""
    table_features = jax.jit(lambda: jax.vmap(env.features)(env.all_states()))()

    def row(x):
        # The listed state with these features (features identify hypergrid states up to `stopped`;
        # non-stopped rows come first, which is where the policy is read); a condition, appended
        # after the features, is ignored.
        return jnp.argmax(jnp.all(table_features == x[None, : table_features.shape[1]], axis=1))

    def logits(table, x):
        return table[row(x)]

    def scalar(table, x):
        return table[row(x)]

    return pg.gfn.GFlowNet(env, logits, logits if learned_backward else None, scalar)


def exact_solution(env, log_reward_scale=1.0):
    """Exact state log flows, forward log probabilities (per listed state) and log Z (uniform P_B)."""
    n, a = env.num_states, env.num_actions

    @jax.jit
    def tables():
        states = env.all_states()
        children = jax.vmap(lambda s: jax.vmap(lambda u: env.state_index(env.step(s, u)))(jnp.arange(a)))(states)
        return (jax.vmap(env.is_terminal)(states), jax.vmap(env.forward_mask)(states), children,
                jax.vmap(env.backward_mask)(states).sum(1), jax.vmap(env.log_reward)(states))

    terminal, mask, children, parents, log_r = map(np.asarray, tables())
    mask = mask & ~terminal[:, None]
    log_r = log_reward_scale * log_r.astype(np.float64)
    flow = np.full(n, np.nan)
    flow[terminal] = np.exp(log_r[terminal])
    # Repeatedly resolve states whose children are all known (a DAG: terminates).
    for _ in range(env.max_steps + 1):
        for i in np.flatnonzero(np.isnan(flow)):
            kids = children[i][mask[i]]
            if not np.isnan(flow[kids]).any():
                flow[i] = np.sum(flow[kids] / parents[kids])
    assert not np.isnan(flow).any()
    safe = np.where(mask, children, 0)
    edge = np.where(mask, flow[safe] / np.maximum(parents[safe], 1), 0.0)
    with np.errstate(divide="ignore"):
        log_pf = np.where(mask, np.log(edge) - np.log(flow)[:, None], -np.inf)
    initial = int(env.state_index(env.initial_state))
    return np.log(flow), log_pf, np.log(flow[initial]), log_r


def exact_params(env, kind="policy"):
    """Tabular parameters of the exact solution for :func:`tabular_gflownet`.

    ``kind``: ``"policy"`` (forward = log P_F, log_flow = log F), ``"forward_looking"``
    (log_flow = log F - log R, the residual flow of FL-DB) or ``"edges"`` (forward = log edge
    flows log F(s) + log P_F, for flow matching).
    """
    dtype = jnp.result_type(float)
    log_flow, log_pf, log_z, log_r = exact_solution(env)
    forward = np.where(np.isfinite(log_pf), log_pf, 0.0)
    if kind == "edges":
        forward = forward + log_flow[:, None]
    if kind == "forward_looking":
        log_flow = log_flow - log_r
    return {"forward": jnp.asarray(forward, dtype), "log_flow": jnp.asarray(log_flow, dtype),
            "log_Z": jnp.asarray(log_z, dtype)}


def random_gflownet(env, seed, hidden=(16,), scale=0.5, **kwargs):
    """An MLP GFlowNet with random (non-uniform) policies: its parameters plus numpy noise."""
    gfn, params = pg.gfn.init_gflownet(jax.random.key(seed), env, list(hidden), **kwargs)
    rng = np.random.default_rng(seed)
    noisy = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(scale=scale, size=x.shape), x.dtype), params)
    return gfn, noisy


GRID = pg.gfn.hypergrid(dim=2, height=4)
GRID_GFN, GRID_PARAMS = random_gflownet(GRID, 0, learned_backward=True)
GRID_TABULAR = tabular_gflownet(GRID)
