"""Errors raised by ``probgen.train``: each says what went wrong, where, and what to do."""

from __future__ import annotations

from typing import Any

from probgen.core.errors import ProbgenError


class NonFiniteLossError(ProbgenError, FloatingPointError):
    """The loss (or its gradient) became NaN or infinite during :func:`probgen.train.fit`.

    Attributes:
      step: the first step whose loss or gradient was not finite.
      last_finite_loss: the loss at the step before (``None`` if the first step failed).
      result: a :class:`probgen.train.FitResult` holding the last good state, i.e. the
        parameters and optimizer state *entering* ``step``, and the history up to it.
    """

    def __init__(self, message: str, step: int, last_finite_loss: float | None, result: Any):
        super().__init__(message)
        self.step = step
        self.last_finite_loss = last_finite_loss
        self.result = result


class CheckpointError(ProbgenError, RuntimeError):
    """A checkpoint is missing, unreadable or corrupted."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint does not match the parameters / optimizer it is restored into."""


class SweepAxisError(ProbgenError, TypeError):
    """A sweep axis cannot be vmapped (e.g. an int that sets a shape)."""
