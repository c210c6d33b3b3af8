"""Training and scale: the fit loop, vmapped sweeps, orbax checkpoints, progress, sharding, plots.

- :func:`fit` runs optax optimization as jitted ``lax.scan`` chunks, with a progress bar,
  a metrics history, checkpoints and a clear error on a NaN; :func:`resume` continues a
  checkpointed run bit-for-bit; :func:`optimize` is its pure, vmappable core.
- :func:`sweep` vmaps a whole training run over a hyperparameter grid (optionally
  sharded over devices), with fit's progress bar, checkpoints and NaN freeze when the run
  is one fit; :func:`resume_sweep` continues a checkpointed sweep bit-for-bit;
  :func:`best` and :func:`tabulate` read the results.
- :mod:`probgen.train.sharding`: meshes for data-, particle- and sweep-parallel work.
- :mod:`probgen.train.plots`: loss curves, sweep plots, sample scatter / density and trace plots.
"""

from probgen.train import plots, sharding
from probgen.train.checkpoint import (
    latest_step,
    prepare_checkpoint_dir,
    restore_checkpoint,
    save_checkpoint,
)
from probgen.train.data import BatchSpec, batch_indices, batch_spec, take_batch
from probgen.train.errors import (
    CheckpointError,
    CheckpointMismatchError,
    NonFiniteLossError,
    SweepAxisError,
)
from probgen.train.fitting import fit, optimize, resume
from probgen.train.progress import is_interactive, progress_bar
from probgen.train.sharding import constrain_leading, make_mesh, replicate, shard_leading
from probgen.train.state import FitResult, FitState
from probgen.train.sweep import SweepResult, best, metric_values, resume_sweep, sweep, tabulate

__all__ = [
    "BatchSpec",
    "CheckpointError",
    "CheckpointMismatchError",
    "FitResult",
    "FitState",
    "NonFiniteLossError",
    "SweepAxisError",
    "SweepResult",
    "batch_indices",
    "batch_spec",
    "best",
    "constrain_leading",
    "fit",
    "is_interactive",
    "latest_step",
    "make_mesh",
    "metric_values",
    "optimize",
    "plots",
    "prepare_checkpoint_dir",
    "progress_bar",
    "replicate",
    "restore_checkpoint",
    "resume",
    "resume_sweep",
    "save_checkpoint",
    "shard_leading",
    "sharding",
    "sweep",
    "tabulate",
    "take_batch",
]
