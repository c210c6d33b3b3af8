"""Errors raised at trace time by the modeling language; each names the address at fault."""

from __future__ import annotations


class ProbgenError(Exception):
    """Base class of probgen's own errors."""


class AddressError(ProbgenError, ValueError):
    """An address is visited twice, or used both as a value and as a prefix."""


class ConstraintError(ProbgenError, ValueError):
    """A constraint was not consumed, or its shape does not match its site."""


class MissingChoiceError(ProbgenError, KeyError):
    """``assess`` found a sample site with no value in the choice map."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArgumentError(ProbgenError, TypeError):
    """An argument has the wrong kind: a generative-function argument that is not an array
    (or pytree of arrays), a model that is not a generative function, a state of another kernel."""


class StrategyError(ProbgenError, ValueError):
    """A gradient strategy was asked of a distribution that cannot support it."""


class SettingError(ProbgenError, ValueError):
    """A static setting (a count, a threshold, a scheme name) is out of its range."""
