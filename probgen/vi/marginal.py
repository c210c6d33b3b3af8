"""``marginal`` and ``sir``: density estimates by inner importance sampling.

A variational family with auxiliary variables, ``q(x) = ∫ q(x, z) dz``, has no density
to evaluate. :func:`marginal` turns the joint ``q(x, z)`` into a generative function over
``x`` alone whose ``score`` is an importance-sampling *estimate* of ``log q(x)`` with an
inner proposal ``r(z; x)``, built so that each objective stays a bound
(Sobolev & Vetrov 2019, "Importance Weighted Hierarchical Variational Inference"):

* ``simulate`` draws ``(x, z₁)`` from the joint and ``z₂..z_K ~ r``; with
  ``ŵ = (1/K) Σ_k q(x, z_k) / r(z_k; x)`` the reciprocal is unbiased,
  ``E[q(x) / ŵ] = 1`` — so ``-log ŵ`` in an ELBO keeps it a lower bound (HVI, IWHVI).
* ``generate(key, {x}, ...)`` (every kept address constrained) draws all ``K`` particles
  from ``r``: ``E[ŵ] = q(x)`` — an unbiased density, for the model side or for IWAE.

:func:`sir` is the dual construction for an unnormalized target ``p̃(z)``: sampling
importance resampling (SIR) with ``K`` proposals. Its ``simulate`` returns one resampled
particle with ``log q̂ = log p̃(z) - log Ẑ`` (with ``E[q_SIR(z)/q̂] = 1``) and its
``generate`` of a given ``z`` runs conditional SIR (``E[q̂] = q_SIR(z)``). Used as a
guide, ``elbo(model, sir(model-ish target, proposal, K))`` recovers IWAE.

Both need randomness to evaluate a density, so ``assess`` (which takes no key) is refused
with a message pointing at ``generate``; ``pg.vi`` objectives evaluate model densities
with ``generate`` for that reason. Inner REINFORCE terms (the proposal's discrete sites,
the resampling index) travel in ``trace.extras``; ENUM/MVD sites are refused inside.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from probgen.core.checks import static_int
from probgen.core.choicemap import as_choicemap, as_selection
from probgen.core.errors import ArgumentError, SettingError
from probgen.core.gfi import GenerativeFunction
from probgen.core.numerics import log_mean_exp
from probgen.core.trace import Trace
from probgen.vi.estimator import EstimatorError, term_scope, vmap_program
from probgen.core.keys import particle_keys


def _need_key(name: str, key) -> None:
    if key is None:
        raise EstimatorError(
            f"{name} estimates its density by inner importance sampling and needs a key: call "
            f"generate(key, choices, ...) instead of assess(choices, ...)"
        )


class Marginal(GenerativeFunction):
    """The marginal of a generative function over the ``keep`` addresses (see :func:`marginal`)."""

    def __init__(self, gf: GenerativeFunction, keep, proposal: GenerativeFunction, num_particles: int):
        num_particles = static_int(num_particles, "num_particles", "marginal")
        if not isinstance(proposal, GenerativeFunction):
            raise SettingError(f"marginal: proposal must be a generative function, got {type(proposal).__name__}")
        self.gf = gf
        self.keep = as_selection(keep)
        self.proposal = proposal
        self.num_particles = num_particles
        self.__name__ = f"marginal({gf.__name__})"

    def _particles(self, key, kept: ChoiceMap, args, count: int):
        def one(k):
            tr = self.proposal.simulate(k, kept, *args)
            log_joint, _ = self.gf.assess(kept.merge(tr.choices), *args)
            return log_joint - tr.score

        return vmap_program(one)(jax.random.split(key, count))

    def _run(self, key, constraints, args, mode):
        _need_key(self.__name__, key)
        with term_scope() as scope:
            if constraints.is_empty():
                k_joint, k_rest = jax.random.split(key)
                joint = self.gf.simulate(k_joint, *args)
                kept = joint.choices.filter(self.keep)
                aux = joint.choices.filter(self.keep.complement())
                log_r, _ = self.proposal.assess(aux, kept, *args)
                log_w = (joint.score - log_r)[None]
                if self.num_particles > 1:
                    log_w = jnp.concatenate([log_w, self._particles(k_rest, kept, args, self.num_particles - 1)])
                retval, weight = joint.retval, jnp.zeros((), joint.score.dtype)
            else:
                kept = constraints
                log_w = self._particles(key, kept, args, self.num_particles)
                retval, weight = None, None
        log_q = log_mean_exp(log_w, axis=0)
        if weight is None:
            weight = log_q
        return Trace(self, args, retval, kept, log_q, scope.terms()), weight


def marginal(gf: GenerativeFunction, keep, proposal: GenerativeFunction, num_particles: int = 1) -> Marginal:
    """Approximately marginalize auxiliary choices: a GF over ``keep`` with an estimated density.

    Args:
      gf: the joint generative function ``q(x, z)``.
      keep: the addresses of ``x`` (a selection, an address or a list of addresses).
      proposal: a generative function ``r(z; x)`` called as ``proposal(kept_choices, *args)``
        (``kept_choices`` is a ChoiceMap, ``args`` are ``gf``'s) whose choices are the
        auxiliary addresses.
      num_particles: ``K`` inner particles (1 = HVI, >1 = IWHVI).

    Returns:
      A generative function whose choices are the kept ones; ``simulate``'s score has
      ``E[q(x)/exp(score)] = 1`` and ``generate(key, x)``'s has ``E[exp(score)] = q(x)``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def joint(mu):
        ...     z = pg.sample("z", pg.Normal(mu, 1.0))
        ...     return pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def reverse(kept, mu):
        ...     return pg.sample("z", pg.Normal(kept["x"] / 2, 0.8))
        >>> q = pg.vi.marginal(joint, keep="x", proposal=reverse, num_particles=4)
        >>> q.simulate(jax.random.key(0), 0.0).choices.addresses()
        [('x',)]
    """
    return Marginal(gf, keep, proposal, num_particles)


class SIR(GenerativeFunction):
    """SIR over an unnormalized target (see :func:`sir`). Args: (observations, target_args, proposal_args)."""

    def __init__(self, target: GenerativeFunction, proposal: GenerativeFunction, num_particles: int):
        num_particles = static_int(num_particles, "num_particles", "sir")
        self.target = target
        self.proposal = proposal
        self.num_particles = num_particles
        self.__name__ = f"sir({target.__name__})"

    def _run(self, key, constraints, args, mode):
        _need_key(self.__name__, key)
        if len(args) != 3:
            raise ArgumentError(
                f"{self.__name__} takes (observations, target_args, proposal_args), got {len(args)} arguments"
            )
        observations, target_args, proposal_args = args
        observations = as_choicemap(observations)
        def one(k):
            tr = self.proposal.simulate(k, *proposal_args)
            log_target, _ = self.target.assess(tr.choices.merge(observations), *target_args)
            return tr.choices, log_target, tr.score

        with term_scope() as scope:
            k_pick, k_particles = jax.random.split(key)
            if constraints.is_empty():
                choices, log_target, log_q = vmap_program(one)(particle_keys(k_particles, self.num_particles))
                log_w = log_target - log_q
                index = jax.random.categorical(k_pick, jax.lax.stop_gradient(log_w))
                # The resampling index is a discrete choice: its score-function term keeps
                # objectives over this family unbiased.
                scope.add_log_prob(jax.nn.log_softmax(log_w)[index])
                chosen = jax.tree.map(lambda leaf: leaf[index], choices)
                score = log_target[index] - log_mean_exp(log_w, axis=0)
                weight = jnp.zeros((), score.dtype)
            else:
                chosen = constraints
                log_target0, _ = self.target.assess(chosen.merge(observations), *target_args)
                log_q0, _ = self.proposal.assess(chosen, *proposal_args)
                log_w = (log_target0 - log_q0)[None]
                if self.num_particles > 1:
                    _, log_target, log_q = vmap_program(one)(particle_keys(k_particles, self.num_particles - 1))
                    log_w = jnp.concatenate([log_w, log_target - log_q])
                score = log_target0 - log_mean_exp(log_w, axis=0)
                weight = score
        return Trace(self, args, None, chosen, score, scope.terms()), weight


def sir(target: GenerativeFunction, proposal: GenerativeFunction, num_particles: int) -> SIR:
    """Sampling importance resampling (SIR) as a generative function: an approximately normalized target.

    ``K`` proposals are weighted by the unnormalized target and one is resampled; the
    result is a family with an estimated density, usable as a guide in any objective.

    Args:
      target: a generative function whose ``assess`` on the proposal's choices merged with
        the observations gives the unnormalized log density ``log p̃(z)``.
      proposal: a generative function ``q(z)`` over the same latent addresses.
      num_particles: ``K`` proposals per draw.

    Returns:
      A generative function with arguments ``(observations, target_args, proposal_args)``
      whose choices are ``z``: ``simulate`` returns one resampled particle with score
      ``log p̃(z) - log Ẑ``; ``generate(key, z, ...)`` runs conditional SIR and its score is
      an unbiased estimate (after ``exp``) of the SIR sampler's density at ``z``.

    Example:
        >>> import jax, probgen as pg
        >>> @pg.gen
        ... def target():
        ...     z = pg.sample("z", pg.Normal(0.0, 1.0))
        ...     pg.sample("x", pg.Normal(z, 1.0))
        >>> @pg.gen
        ... def proposal():
        ...     pg.sample("z", pg.Normal(0.0, 2.0))
        >>> q = pg.vi.sir(target, proposal, num_particles=8)
        >>> tr = q.simulate(jax.random.key(0), pg.ChoiceMap({"x": 1.0}), (), ())
        >>> tr.choices.addresses()
        [('z',)]
    """
    return SIR(target, proposal, num_particles)
