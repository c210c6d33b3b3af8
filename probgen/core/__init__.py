"""The modeling language: generative functions, traces, choice maps, combinators."""

from probgen.core.choicemap import ALL, ChoiceMap, Selection, select
from probgen.core.combinators import Scan, Switch, VMap, mix, repeat, scan, switch, vmap
from probgen.core.errors import (
    AddressError,
    ArgumentError,
    ConstraintError,
    MissingChoiceError,
    ProbgenError,
    StrategyError,
    SettingError,
)
from probgen.core.gen import GenFn, gen, sample
from probgen.core.gfi import GenerativeFunction, Mode
from probgen.core.keys import particle_keys
from probgen.core.trace import Trace
from probgen.core.validation import ValidationError, validate

__all__ = [
    "ALL", "AddressError", "ArgumentError", "ChoiceMap", "ConstraintError", "GenFn", "GenerativeFunction",
    "MissingChoiceError", "Mode", "ProbgenError", "Scan", "Selection", "SettingError", "StrategyError",
    "Switch", "Trace", "VMap", "ValidationError", "gen", "mix", "particle_keys", "repeat", "sample", "scan", "select",
    "switch", "validate", "vmap",
]
