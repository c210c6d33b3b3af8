"""Shared timing helpers for the benchmark scripts (side-by-side, one process)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def compile_seconds(fn: Callable, *args: Any) -> float:
    """Wall time to trace, lower and compile ``fn`` for ``args`` (no execution).

    A fresh wrapper defeats JAX's in-process caches, so each call measures a cold compile.
    """
    fresh = lambda *a: fn(*a)  # noqa: E731
    start = time.perf_counter()
    jax.jit(fresh).lower(*args).compile()
    return time.perf_counter() - start


def run_seconds(fn: Callable, *args: Any, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time of one call of the jitted ``fn`` after warm-up."""
    jitted = jax.jit(fn)
    for _ in range(warmup):
        jax.block_until_ready(jitted(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_calls(thunks: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """Time argument-less calls round-robin so drift hits all alike.

    Returns ``(median seconds, first-call seconds)`` per name; the first ``warmup`` calls of
    each are not timed (the first one's wall time, compile included, is reported apart).
    """
    first: dict[str, float] = {}
    for name, thunk in thunks.items():
        for i in range(warmup):
            start = time.perf_counter()
            jax.block_until_ready(thunk())
            if i == 0:
                first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            start = time.perf_counter()
            jax.block_until_ready(thunk())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, first


def interleaved_seconds(fns: dict[str, Callable], *args: Any, repeats: int = 20) -> dict[str, float]:
    """Median times of several jitted functions, calls interleaved so drift hits all alike."""
    jitted = {name: jax.jit(f) for name, f in fns.items()}
    thunks = {name: (lambda f=f: f(*args)) for name, f in jitted.items()}
    return interleaved_calls(thunks, repeats, warmup=2)[0]


def flops(fn: Callable, *args: Any) -> float | None:
    """XLA's cost-analysis flop count of the compiled ``fn``, when the backend reports one."""
    return compiled_flops(jax.jit(fn).lower(*args).compile())


def compiled_flops(compiled: Any) -> float | None:
    """XLA's cost-analysis flop count of an already compiled executable, if reported."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return None if not analysis else analysis.get("flops")


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n== {title} ({jax.devices()[0].device_kind}, jax {jax.__version__}) ==")
    if not rows:
        return
    cols = list(rows[0].keys())
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
