"""Benchmark: NUTS with Stan's window adaptation, 4 chains — probgen vs NumPyro vs Blackjax.

Figure of merit: effective samples per second, the bulk ESS of the slowest scalar parameter
(``pg.mc.bulk_ess`` on every framework's draws, in the model's own coordinates) divided by
the wall time of the whole call, warmup included. Three models, the same for all three
frameworks (the same numpyro distributions score them; Blackjax gets the log density in
unconstrained coordinates written out by hand, log-Jacobians included):

1. eight schools, non-centered (mu, tau ~ HalfCauchy(5), theta_t: 10 parameters);
2. logistic regression, 500 synthetic rows, 24 features + intercept, N(0, 1) priors;
3. stochastic volatility (NumPyro's example model): sigma ~ Exponential(50),
   nu ~ Exponential(0.1), s ~ GaussianRandomWalk(sigma, 2516), r ~ StudentT(nu, 0, exp(s)),
   with 2,516 returns simulated from the model (fixed seed): 2,518 parameters.

Every framework runs 4 chains from Stan's uniform(-2, 2) box in unconstrained space, a
diagonal mass matrix, target acceptance 0.8 and tree depth 10, each chain adapting on its
own. Runners: probgen ``pg.mc.run_mcmc`` with ``chain_method="auto"`` (sequential on CPU)
and ``"vectorized"``; NumPyro ``MCMC(NUTS(model), chain_method="sequential" | "vectorized",
progress_bar=False)``; Blackjax ``window_adaptation`` + ``nuts`` with ``jax.vmap`` over chains,
warmup and sampling in one ``jax.jit`` (no adaptation history kept). Two timings each, calls
interleaved across frameworks: the first call (compile included: what a user waits for) and
the steady state (later calls with new keys: probgen reuses its compiled program for the same
``Posterior``; Blackjax reuses the jitted function; NumPyro recompiles, see ``NUMPYRO_NOTE``).
Each call's tracing and compile time is read from ``jax.monitoring`` events, so ESS/s is also
given for run time alone. Ratios are probgen ESS/s over the peer's (> 1: probgen faster).

Run: ``.venv/bin/python benchmarks/mcmc.py [--quick]``: full about 14 minutes on the shared
2-core development machine (SV takes most of it), ``--quick`` under 3 minutes (smaller sizes,
three runners, SV on a 500-step series). Results and their reading: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import probgen as pg

sys.path.insert(0, os.path.dirname(__file__))
from common import print_table  # noqa: E402

NUM_CHAINS = 4
SV_STEPS = 2516
NUMPYRO_NOTE = (
    "NumPyro's second .run on the same MCMC object runs warmup again (there was no .warmup() call) and "
    "recompiles its sampling loop (jit(_fori_collect_loop), see JAX_LOG_COMPILES=1): once per chain with "
    "chain_method='sequential' (a Python loop over chains), once with 'vectorized' (jit_model_args=True "
    "does not avoid it); recompile_s is that time"
)


class Case(NamedTuple):
    """One model, written once per framework."""

    name: str
    posterior: Callable[[], Any]          # fresh pg.mc.posterior (a fresh one compiles cold)
    numpyro_model: Callable
    numpyro_args: tuple
    numpyro_kwargs: dict
    logdensity: Callable                  # Blackjax: position dict (unconstrained) -> log density
    constrain: Callable                   # Blackjax: position dict -> values dict
    shapes: dict                          # Blackjax: position shapes
    key_params: dict                      # label -> draws dict -> (chains, draws)
    num_warmup: int
    num_samples: int


class Run(NamedTuple):
    """What one call of one framework produced (numpy, chains first)."""

    samples: dict
    divergences: int
    leapfrog: np.ndarray  # leapfrog steps of each sampling transition, (chains, draws)
    step_size: float     # mean adapted step size over chains


# -- models -------------------------------------------------------------------------------------------------


def eight_schools(num_warmup: int, num_samples: int) -> Case:
    import numpyro
    import numpyro.distributions as dist

    y = jnp.asarray([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = jnp.asarray([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    @pg.gen
    def schools(sigma):
        mu = pg.sample("mu", pg.Normal(0.0, 5.0))
        tau = pg.sample("tau", pg.dist.HalfCauchy(5.0))
        theta_t = pg.sample("theta_t", pg.Normal(jnp.zeros(8), 1.0))
        pg.sample("y", pg.Normal(mu + tau * theta_t, sigma))

    def numpyro_schools(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        theta_t = numpyro.sample("theta_t", dist.Normal(jnp.zeros(8), 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * theta_t, sigma), obs=y)

    def logdensity(p):
        tau = jnp.exp(p["tau"])
        return (dist.Normal(0.0, 5.0).log_prob(p["mu"]) + dist.HalfCauchy(5.0).log_prob(tau) + p["tau"]
                + dist.Normal(0.0, 1.0).log_prob(p["theta_t"]).sum()
                + dist.Normal(p["mu"] + tau * p["theta_t"], sigma).log_prob(y).sum())

    return Case(
        "eight schools (non-centered)", num_warmup=num_warmup, num_samples=num_samples,
        posterior=lambda: pg.mc.posterior(schools, {"y": y}, sigma),
        numpyro_model=numpyro_schools, numpyro_args=(sigma,), numpyro_kwargs={"y": y},
        logdensity=logdensity, constrain=lambda p: {**p, "tau": jnp.exp(p["tau"])},
        shapes={"mu": (), "tau": (), "theta_t": (8,)},
        key_params={"mu": lambda s: s["mu"], "tau": lambda s: s["tau"], "theta_t[0]": lambda s: s["theta_t"][..., 0]},
    )


def logistic_regression(num_warmup: int, num_samples: int, num_rows: int = 500, num_features: int = 24,
                        seed: int = 0) -> Case:
    import numpyro
    import numpyro.distributions as dist

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_rows, num_features))
    x = np.concatenate([np.ones((num_rows, 1)), features], axis=1).astype(np.float32)
    w_true = 0.5 * rng.normal(size=num_features + 1)
    y = (rng.uniform(size=num_rows) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float32)
    x, y = jnp.asarray(x), jnp.asarray(y)
    dim = num_features + 1

    @pg.gen
    def logreg(x):
        w = pg.sample("w", pg.Normal(jnp.zeros(dim), 1.0))
        pg.sample("y", pg.Bernoulli(logits=x @ w))

    def numpyro_logreg(x, y=None):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(dim), 1.0))
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    def logdensity(p):
        logits = x @ p["w"]
        # y * logits - softplus(logits): the Bernoulli(logits) log mass, one transcendental per row
        return dist.Normal(0.0, 1.0).log_prob(p["w"]).sum() + jnp.sum(y * logits - jax.nn.softplus(logits))

    return Case(
        f"logistic regression {num_rows}x{dim}", num_warmup=num_warmup, num_samples=num_samples,
        posterior=lambda: pg.mc.posterior(logreg, {"y": y}, x),
        numpyro_model=numpyro_logreg, numpyro_args=(x,), numpyro_kwargs={"y": y},
        logdensity=logdensity, constrain=lambda p: p, shapes={"w": (dim,)},
        key_params={"w[0] (intercept)": lambda s: s["w"][..., 0], "w[1]": lambda s: s["w"][..., 1],
                    "w[24]": lambda s: s["w"][..., dim - 1]},
    )


def stochastic_volatility(num_steps: int = SV_STEPS):
    """NumPyro's stochastic-volatility example model over ``num_steps`` returns, as a probgen model."""

    @pg.gen
    def stochastic_volatility():
        sigma = pg.sample("sigma", pg.dist.Exponential(50.0))
        s = pg.sample("s", pg.dist.GaussianRandomWalk(scale=sigma, num_steps=num_steps))
        nu = pg.sample("nu", pg.dist.Exponential(0.1))
        pg.sample("r", pg.dist.StudentT(nu, 0.0, jnp.exp(s)))

    return stochastic_volatility


# Seed 2 is the first seed whose prior draw has a volatility of volatility above 0.05 (sigma = 0.109,
# nu = 3.49); seeds 0 and 1 draw sigma = 0.00015 and 0.010, for which the log-volatility s barely moves.
SV_SEED = 2


def sv_returns(num_steps: int = SV_STEPS) -> tuple[jax.Array, dict]:
    """Returns simulated from the model itself (no network here for the S&P 500 data)."""
    model = stochastic_volatility(num_steps)
    choices = jax.jit(lambda k: model.simulate(k).choices)(jax.random.key(SV_SEED))
    truth = {"sigma": float(choices["sigma"]), "nu": float(choices["nu"])}
    return choices["r"], truth


def stochastic_volatility_case(num_warmup: int, num_samples: int, num_steps: int = SV_STEPS) -> Case:
    import numpyro
    import numpyro.distributions as dist

    returns, _ = sv_returns(num_steps)
    model = stochastic_volatility(num_steps)

    def numpyro_sv(returns):
        sigma = numpyro.sample("sigma", dist.Exponential(50.0))
        s = numpyro.sample("s", dist.GaussianRandomWalk(scale=sigma, num_steps=returns.shape[0]))
        nu = numpyro.sample("nu", dist.Exponential(0.1))
        numpyro.sample("r", dist.StudentT(nu, 0.0, jnp.exp(s)), obs=returns)

    def logdensity(p):
        sigma, nu = jnp.exp(p["sigma"]), jnp.exp(p["nu"])
        return (dist.Exponential(50.0).log_prob(sigma) + p["sigma"] + dist.Exponential(0.1).log_prob(nu) + p["nu"]
                + dist.GaussianRandomWalk(scale=sigma, num_steps=num_steps).log_prob(p["s"])
                + dist.StudentT(nu, 0.0, jnp.exp(p["s"])).log_prob(returns).sum())

    return Case(
        f"stochastic volatility T={num_steps}", num_warmup=num_warmup, num_samples=num_samples,
        posterior=lambda: pg.mc.posterior(model, {"r": returns}),
        numpyro_model=numpyro_sv, numpyro_args=(returns,), numpyro_kwargs={},
        logdensity=logdensity, constrain=lambda p: {**p, "sigma": jnp.exp(p["sigma"]), "nu": jnp.exp(p["nu"])},
        shapes={"sigma": (), "s": (num_steps,), "nu": ()},
        key_params={"sigma": lambda s: s["sigma"], "nu": lambda s: s["nu"], "s[-1]": lambda s: s["s"][..., -1]},
    )


# -- runners: key -> Run ---------------------------------------------------------------------------------------


def _numpy(tree):
    return jax.tree.map(np.asarray, jax.block_until_ready(tree))


def probgen_runner(case: Case, chain_method: str) -> Callable[[int], Run]:
    post = case.posterior()  # its own Posterior: the first call compiles cold

    def call(seed: int) -> Run:
        result = pg.mc.run_mcmc(post, jax.random.key(seed), case.num_samples, num_warmup=case.num_warmup,
                                num_chains=NUM_CHAINS, chain_method=chain_method)
        result = _numpy(result)
        return Run(result.samples, int(result.infos.is_divergent.sum()), result.infos.num_integration_steps,
                   float(result.step_size.mean()))

    return call


def numpyro_runner(case: Case, chain_method: str) -> Callable[[int], Run]:
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(case.numpyro_model), num_warmup=case.num_warmup, num_samples=case.num_samples,
                num_chains=NUM_CHAINS, chain_method=chain_method, progress_bar=False)

    def call(seed: int) -> Run:
        mcmc.run(jax.random.PRNGKey(seed), *case.numpyro_args, extra_fields=("num_steps", "adapt_state.step_size"),
                 **case.numpyro_kwargs)
        samples = _numpy(mcmc.get_samples(group_by_chain=True))
        extra = _numpy(mcmc.get_extra_fields(group_by_chain=True))
        return Run(samples, int(extra["diverging"].sum()), extra["num_steps"],
                   float(extra["adapt_state.step_size"][:, -1].mean()))

    return call


def blackjax_runner(case: Case) -> Callable[[int], Run]:
    import blackjax

    try:  # keep no warmup history (blackjax >= 1.1); older versions keep it all
        from blackjax.adaptation.base import get_filter_adapt_info_fn
        no_history = {"adaptation_info_fn": get_filter_adapt_info_fn()}
    except ImportError:
        no_history = {}

    def one_chain(key, position):
        k_warm, k_sample = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, case.logdensity, target_acceptance_rate=0.8, **no_history)
        (state, parameters), _ = warmup.run(k_warm, position, num_steps=case.num_warmup)
        step = blackjax.nuts(case.logdensity, **parameters).step

        def body(state, k):
            state, info = step(k, state)
            return state, (case.constrain(state.position), info.is_divergent, info.num_integration_steps)

        _, draws = jax.lax.scan(body, state, jax.random.split(k_sample, case.num_samples))
        return draws, parameters["step_size"]

    @jax.jit
    def chains(key):
        k_init, k_chains = jax.random.split(key)
        init_keys = jax.random.split(k_init, len(case.shapes))
        positions = {name: jax.random.uniform(k, (NUM_CHAINS,) + shape, minval=-2.0, maxval=2.0)
                     for k, (name, shape) in zip(init_keys, case.shapes.items())}
        return jax.vmap(one_chain)(jax.random.split(k_chains, NUM_CHAINS), positions)

    def call(seed: int) -> Run:
        (samples, divergent, leapfrog), step_size = _numpy(chains(jax.random.key(seed)))
        return Run(samples, int(divergent.sum()), leapfrog, float(step_size.mean()))

    return call


RUNNERS = {
    "probgen auto (sequential)": lambda case: probgen_runner(case, "auto"),
    "probgen vectorized": lambda case: probgen_runner(case, "vectorized"),
    "numpyro sequential": lambda case: numpyro_runner(case, "sequential"),
    "numpyro vectorized": lambda case: numpyro_runner(case, "vectorized"),
    "blackjax vmap": blackjax_runner,
}
# ratio pairs: probgen runner -> the peers it is compared with
PAIRS = {"probgen auto (sequential)": ("numpyro sequential", "blackjax vmap"),
         "probgen vectorized": ("numpyro vectorized", "blackjax vmap")}


# -- measurement ------------------------------------------------------------------------------------------------


def min_bulk_ess(samples: dict) -> tuple[float, str]:
    """Bulk ESS of the slowest scalar parameter over every latent, and that parameter's name."""
    slowest = []
    for name, draws in samples.items():
        ess = np.asarray(pg.mc.bulk_ess(np.asarray(draws, np.float64)))
        index = np.unravel_index(np.argmin(ess), ess.shape)
        slowest.append((float(ess[index]), name + "".join(f"[{i}]" for i in index)))
    return min(slowest)


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling, read from ``jax.monitoring`` events.

    Nested jits report nested spans, so the clock measures the union of the spans.
    """

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.spans: list[tuple[float, float]] = []
        jax.monitoring.register_event_time_span_listener(self._listen)

    def _listen(self, event: str, start: float, end: float, **_: Any) -> None:
        if event in self.EVENTS:
            self.spans.append((start, end))

    def seconds(self, since: float, until: float) -> float:
        total, reach = 0.0, since
        for start, end in sorted(self.spans):
            start, end = max(start, reach), min(end, until)
            if end > start:
                total, reach = total + end - start, end
        return total


CLOCK = CompileClock()


def measure(case: Case, runner_names: tuple[str, ...], repeats: int, long_call_s: float = 5.0) -> dict:
    """First call (compile included) then up to ``repeats`` steady calls of every runner, interleaved.

    A runner whose steady call takes over ``long_call_s`` (NumPyro, which recompiles) gets one
    steady call: its time is mostly compile, steady to a few percent.
    """
    runners = {name: RUNNERS[name](case) for name in runner_names}
    calls: dict[str, list[tuple[float, float, Run]]] = {name: [] for name in runners}
    for seed in range(1 + repeats):
        for name, call in runners.items():
            if seed >= 2 and calls[name][-1][0] > long_call_s:
                continue
            gc.collect()  # a collection of the peers' garbage (NumPyro's retracing makes plenty) is nobody's run time
            start = time.time()
            run = call(seed)
            end = time.time()
            calls[name].append((end - start, CLOCK.seconds(start, end), run))
    out = {}
    for name, timed in calls.items():
        ess, slowest = zip(*(min_bulk_ess(run.samples) for _, _, run in timed))
        rates = [e / t for e, (t, _, _) in zip(ess, timed)]
        run_rates = [e / (t - c) for e, (t, c, _) in zip(ess[1:], timed[1:])]
        steady = [run for _, _, run in timed[1:]]
        steady_s = statistics.median(t for t, _, _ in timed[1:])
        leapfrog = statistics.median(float(r.leapfrog.mean()) for r in steady)
        out[name] = dict(
            first_s=timed[0][0], first_compile_s=timed[0][1], steady_s=steady_s,
            steady_compile_s=statistics.median(c for _, c, _ in timed[1:]),
            first_ess_per_s=rates[0], ess_per_s=statistics.median(rates[1:]),
            run_ess_per_s=statistics.median(run_rates),
            min_ess=statistics.median(ess[1:]), slowest=slowest[-1],
            divergences=int(np.median([r.divergences for r in steady])),
            leapfrog=leapfrog,
            # each transition of 4 vmapped chains lasts as long as the longest trajectory of the four
            vmap_wait=statistics.median(float(r.leapfrog.max(0).mean() / r.leapfrog.mean()) for r in steady),
            # run time (compile taken out) per gradient, warmup transitions counted at the sampling phase's length
            us_per_grad=1e6 * statistics.median(t - c for t, c, _ in timed[1:])
            / (NUM_CHAINS * (case.num_warmup + case.num_samples) * leapfrog),
            step_size=statistics.median(r.step_size for r in steady),
            means={label: float(np.mean([np.mean(f(r.samples)) for r in steady]))
                   for label, f in case.key_params.items()},
        )
    return out


FULL_RUNNERS = tuple(RUNNERS)
QUICK_RUNNERS = ("probgen auto (sequential)", "numpyro sequential", "blackjax vmap")
COLUMNS = ("name", "first_s", "compile_s", "steady_s", "recompile_s", "min_ess", "ess_s_first", "ess_s",
           "ess_s_run", "vs_numpyro", "vs_blackjax", "notes")


def main(quick: bool = False) -> list[dict]:
    """Rows per model and runner: times, min bulk ESS, ESS/s and probgen's ESS/s ratios to its peers.

    Columns: ``first_s`` / ``compile_s``: the first call's wall time and the part of it JAX
    spent tracing and compiling; ``steady_s`` / ``recompile_s``: the same for a later call
    with a new key (median); ``min_ess``: bulk ESS of the slowest scalar parameter;
    ``ess_s_first``, ``ess_s``: ESS per second of wall time, first and steady call;
    ``ess_s_run``: per second of the steady call's run time (its compile time taken out).
    ``vs_numpyro`` / ``vs_blackjax``: probgen's ESS/s over the peer's as ``steady / first /
    run``; > 1 means probgen is faster.
    """
    runner_names = QUICK_RUNNERS if quick else FULL_RUNNERS
    # (num_warmup, num_samples) and steady calls (medians): one for SV, whose calls take ~45 s each;
    # --quick runs SV on a 500-step series from the same seed (same sigma and nu), to stay near 3 minutes
    small, sv = ((200, 200), (100, 50, 500)) if quick else ((1000, 1000), (200, 200, SV_STEPS))
    steady_calls = 1 if quick else 5
    cases = [(eight_schools(*small), steady_calls), (logistic_regression(*small), steady_calls),
             (stochastic_volatility_case(*sv), 1)]
    rows = []
    for case, repeats in cases:
        t0 = time.perf_counter()
        stats = measure(case, runner_names, repeats)
        rows.append(dict.fromkeys(COLUMNS) | dict(
            name=f"{case.name}: warmup/samples {case.num_warmup}/{case.num_samples} x {NUM_CHAINS} chains, "
                 f"up to {repeats} steady call(s) ({time.perf_counter() - t0:.0f} s)"))
        for name, s in stats.items():
            ratios = {peer: tuple(s[k] / stats[peer][k] for k in ("ess_per_s", "first_ess_per_s", "run_ess_per_s"))
                      for peer in PAIRS.get(name, ()) if peer in stats}
            means = ", ".join(f"{k} {v:.3g}" for k, v in s["means"].items())
            wait = f"; vmap max/mean leapfrog {s['vmap_wait']:.2f}" if "sequential" not in name else ""
            rows.append(dict(
                name=f"  {name}", first_s=s["first_s"], compile_s=s["first_compile_s"], steady_s=s["steady_s"],
                recompile_s=s["steady_compile_s"], min_ess=s["min_ess"], ess_s_first=s["first_ess_per_s"],
                ess_s=s["ess_per_s"], ess_s_run=s["run_ess_per_s"],
                vs_numpyro=_ratio(ratios, "numpyro"), vs_blackjax=_ratio(ratios, "blackjax"),
                notes=(f"slowest {s['slowest']}; div {s['divergences']}; leapfrog/draw {s['leapfrog']:.1f}{wait}; "
                       f"step {s['step_size']:.3g}; ~{s['us_per_grad']:.0f} us/grad; means: {means}"),
            ))
    return rows


def _ratio(ratios: dict, peer: str) -> str | None:
    """``steady / first / run`` ESS/s ratios to the peer whose name starts with ``peer``."""
    for name, values in ratios.items():
        if name.startswith(peer):
            return " / ".join(f"{v:.2f}" for v in values)
    return None


if __name__ == "__main__":
    start = time.perf_counter()
    quick = "--quick" in sys.argv
    rows = main(quick)
    print_table(rows, "NUTS, 4 chains: probgen vs NumPyro vs Blackjax (ESS/s of the slowest parameter)")
    print(f"\n{NUMPYRO_NOTE}.\nSV data: seed {SV_SEED}, true {sv_returns(500 if quick else SV_STEPS)[1]}.")
    print(f"total {time.perf_counter() - start:.0f} s")
