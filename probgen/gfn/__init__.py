"""probgen.gfn: GFlowNets, with environments in pure JAX and policies as generative functions.

A GFlowNet learns to sample terminal objects ``x`` of a DAG of states in proportion to a
reward ``R(x)`` (or ``R(x)^beta``). The map of the subpackage:

- :mod:`~probgen.gfn.envs`: the :class:`Environment` protocol (a NamedTuple of pure
  functions of one state, plus static sizes), :func:`environment` to define one with its
  shapes checked, :func:`check_environment` to check one on every state, and the
  :func:`hypergrid`. :mod:`~probgen.gfn.bitseq` (:func:`bit_sequence`,
  :func:`bitseq_modes`) and :mod:`~probgen.gfn.setgen` (:func:`set_generation`,
  :func:`ising_energy`) are the other built-ins.
- :mod:`~probgen.gfn.policies`: :class:`GFlowNet` (an environment and the functions that
  read the parameters ``{"forward", "backward", "log_flow", "log_Z"}``),
  :func:`init_gflownet` (MLPs from ``pg.flows``), :class:`MaskedCategorical`, the action
  probabilities, and :func:`forward_policy` / :func:`backward_policy`: generative functions
  (a ``pg.scan`` of masked categorical actions) whose traces are trajectories.
- :mod:`~probgen.gfn.trajectories`: :class:`Trajectories` batches, drawn forward
  (:func:`sample_trajectories`, with epsilon-uniform or tempered exploration) or backward
  from terminal states (:func:`sample_backward_trajectories`), cut to partial trajectories
  (:func:`truncate_trajectories`), and their per-step log probabilities (:func:`trajectory_log_probs`).
- :mod:`~probgen.gfn.objectives`: the losses, each ``loss(params, key, batch=None)`` for
  ``pg.fit`` / ``pg.sweep`` / ``jax.grad``: :func:`trajectory_balance`,
  :func:`log_partition_variance` (VarGrad), :func:`detailed_balance`,
  :func:`subtrajectory_balance`, :func:`forward_looking_balance` (FL-DB),
  :func:`modified_detailed_balance`, :func:`edge_flow_matching`; reward exponents and
  conditional (reward- or outcome-conditioned) policies.
- :mod:`~probgen.gfn.replay`: a replay buffer as arrays (:func:`replay_buffer`,
  :func:`replay_add`, :func:`replay_sample`).
- :mod:`~probgen.gfn.training`: :func:`gflownet_trainer`, a ``pg.Kernel`` for off-policy
  training with a buffer (on-policy training is ``pg.fit`` of an objective).
- :mod:`~probgen.gfn.evaluation`: the exact terminal distribution of a learned sampler by
  dynamic programming, the target ``R^beta / Z`` and exact ``log Z``, empirical
  distributions, L1 / Jensen-Shannon distances, modes found, and importance-sampling
  estimates of ``log Z`` and of ``log P_T(x)``.
- :mod:`~probgen.gfn.em`: GFlowNet-EM (:func:`gflownet_em`, a ``pg.Kernel`` alternating
  E-steps that train a GFlowNet conditioned on the data point on the learned reward
  ``p_theta(x, z)`` with M-steps on ``theta``), :func:`log_marginal_estimate` (importance
  sampling of ``log p_theta(x)``) and :func:`log_joint_from_model` (a ``@pg.gen`` model as the
  log joint); :mod:`~probgen.gfn.clustering` is its built-in example
  (:func:`cluster_assignment`, :func:`gaussian_clustering_log_joint`).
"""

from probgen.gfn.bitseq import bit_sequence, bitseq_modes
from probgen.gfn.clustering import cluster_assignment, gaussian_clustering_log_joint
from probgen.gfn.em import (
    GFlowNetEMInfo,
    GFlowNetEMState,
    gflownet_em,
    log_joint_from_model,
    log_marginal_estimate,
)
from probgen.gfn.envs import Environment, check_environment, environment, hypergrid
from probgen.gfn.evaluation import (
    empirical_distribution,
    exact_log_partition,
    exact_terminal_distribution,
    jensen_shannon_divergence,
    l1_distance,
    log_partition_estimate,
    num_modes_found,
    reward_distribution,
    terminal_log_prob_estimate,
)
from probgen.gfn.objectives import (
    detailed_balance,
    edge_flow_matching,
    forward_looking_balance,
    log_partition_variance,
    modified_detailed_balance,
    subtrajectory_balance,
    trajectory_balance,
)
from probgen.gfn.policies import (
    GFlowNet,
    MaskedCategorical,
    backward_action_log_probs,
    backward_policy,
    exploration_log_probs,
    forward_action_log_probs,
    forward_policy,
    init_gflownet,
    masked_log_softmax,
    policy_inputs,
)
from probgen.gfn.replay import ReplayBuffer, replay_add, replay_buffer, replay_sample
from probgen.gfn.setgen import ising_energy, set_generation
from probgen.gfn.training import GFlowNetTrainInfo, GFlowNetTrainState, gflownet_trainer
from probgen.gfn.trajectories import (
    Trajectories,
    sample_backward_trajectories,
    sample_trajectories,
    trajectory_log_probs,
    truncate_trajectories,
)

__all__ = [
    "Environment", "GFlowNet", "GFlowNetEMInfo", "GFlowNetEMState", "GFlowNetTrainInfo", "GFlowNetTrainState",
    "MaskedCategorical", "ReplayBuffer",
    "Trajectories", "backward_action_log_probs", "backward_policy", "bit_sequence", "bitseq_modes",
    "check_environment", "cluster_assignment", "gaussian_clustering_log_joint", "gflownet_em",
    "log_joint_from_model", "log_marginal_estimate", "detailed_balance", "edge_flow_matching",
    "empirical_distribution", "environment",
    "exact_log_partition", "exact_terminal_distribution", "exploration_log_probs", "forward_action_log_probs",
    "forward_looking_balance", "forward_policy", "gflownet_trainer", "hypergrid", "init_gflownet",
    "ising_energy", "jensen_shannon_divergence", "l1_distance", "log_partition_estimate",
    "log_partition_variance", "masked_log_softmax", "modified_detailed_balance", "num_modes_found",
    "policy_inputs", "replay_add", "replay_buffer", "replay_sample", "reward_distribution",
    "sample_backward_trajectories", "sample_trajectories", "set_generation", "subtrajectory_balance",
    "terminal_log_prob_estimate", "trajectory_balance", "trajectory_log_probs", "truncate_trajectories",
]
