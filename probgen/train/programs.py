"""Which compiled program a loss and an optimizer can share: structural keys and a small cache.

``pg.fit`` and ``pg.sweep`` compile one program per (loss, optimizer). Rebuilding either in
a re-run notebook cell makes new objects that compute the same thing; the keys built here
let them find the program compiled before, and the cache keeps only a few programs, so a
stream of different closures does not grow memory. The portable form of the same key is a
checkpoint's fingerprint of a run.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import sys
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

_PROGRAM_CACHE_SIZE = 8  # compiled programs kept; each holds an XLA executable (a few MB)
_MAX_KEY_NODES = 20_000  # objects visited for one key; past this, compile without caching
_MAX_KEY_ARRAY_BYTES = 1 << 26  # numpy arrays (mutable) compared by content up to 64 MiB
_MAX_KEY_DEVICE_ELEMENTS = 1 << 16  # larger jax arrays (immutable) are compared by identity
_ATOMS = (type(None), bool, int, str, bytes, type(Ellipsis))
_EMPTY_CELL = object()


class _TooLarge(Exception):
    """The callables reach too much state to compare cheaply; compile without caching."""


class _Identity:
    """A key part equal only to itself; it holds its object, so the id is never reused."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _is_library_function(fn: types.FunctionType) -> bool:
    """A module-level function of an imported module other than ``__main__`` (a notebook)."""
    module = sys.modules.get(fn.__module__) if isinstance(fn.__module__, str) else None
    return (
        module is not None
        and fn.__module__ != "__main__"
        and getattr(module, "__dict__", None) is fn.__globals__
        and getattr(module, fn.__name__, None) is fn
    )


def _global_names(code: types.CodeType) -> set[str]:
    """Every name the code (and the functions and comprehensions nested in it) looks up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet assigned
        return _EMPTY_CELL


def _has_instance_dict(obj: Any) -> bool:
    return not isinstance(obj, (types.ModuleType, type)) and isinstance(getattr(obj, "__dict__", None), dict)


def _dtype_name(dtype: np.dtype) -> str:
    return f"{dtype.str} {dtype}"  # '<V2 bfloat16': the code alone misses extension dtypes


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class _Structure:
    """Builds keys that are equal for two objects only if they compute the same thing.

    A function is described by its code, defaults, the values it closes over and the
    global variables its code names (so a re-defined closure or a fresh
    ``optax.adam(0.05)`` matches, while other constants, learning rates or globals do not);
    containers, numpy arrays and small jax arrays by content. Module-level functions of
    imported modules, modules, classes and large jax arrays (immutable) are compared by
    identity, as ``jax.jit`` compares the function it wraps; other objects, and classes
    defined in a notebook, by identity and their attributes. Past a size budget, or on
    object arrays, the description gives up (:class:`_TooLarge`).

    With ``portable=True`` identities become names and code becomes a digest of its
    bytecode, so the same run gives the same description in another process (of the same
    Python and library versions): that is a checkpoint's fingerprint of a run.
    """

    def __init__(self, portable: bool = False):
        self.portable = portable
        self.nodes = 0
        self.path: list[int] = []  # ids of the containers being described, for cycles

    def key(self, obj: Any) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_KEY_NODES:
            raise _TooLarge
        kind = type(obj)
        if kind in _ATOMS:
            return (kind.__name__, obj)
        if kind is float:
            return ("float", obj.hex())  # tells -0.0 from 0.0 and matches NaN with NaN
        if kind is complex:
            return ("complex", obj.real.hex(), obj.imag.hex())
        if isinstance(obj, np.dtype):
            return ("dtype", _dtype_name(obj))
        if isinstance(obj, np.generic):
            return ("scalar", _dtype_name(obj.dtype), obj.tobytes())
        if isinstance(obj, types.CodeType):
            return self._code(obj)
        if id(obj) in self.path:
            return ("cycle", self.path.index(id(obj)))
        self.path.append(id(obj))
        try:
            return self._compound(obj)
        finally:
            self.path.pop()

    def _compound(self, obj: Any) -> Any:
        if isinstance(obj, (tuple, list)):
            return (self._type(type(obj)), tuple(self.key(item) for item in obj))
        if isinstance(obj, dict):
            return (self._type(type(obj)), tuple((self.key(k), self.key(v)) for k, v in obj.items()))
        if isinstance(obj, (set, frozenset)):
            return (self._type(type(obj)), tuple(sorted((self.key(item) for item in obj), key=repr)))
        if isinstance(obj, np.ndarray):
            return self._numpy(obj)
        if isinstance(obj, jax.Array):
            return self._device_array(obj)
        if isinstance(obj, jax.tree_util.PyTreeDef):  # compared by structure, like jit's cache
            return ("treedef", str(obj)) if self.portable else ("treedef", obj)
        if isinstance(obj, functools.partial):
            return ("partial", self.key(obj.func), self.key(obj.args), self.key(obj.keywords))
        if isinstance(obj, types.MethodType):
            return ("method", self.key(obj.__func__), self.key(obj.__self__))
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        notebook_class = isinstance(obj, type) and obj.__module__ == "__main__"
        if self.portable or not (notebook_class or _has_instance_dict(obj)):
            return self._identity(obj)
        # Identity, and the attributes as they are now: reassigning one is seen.
        return (self._identity(obj), self.key(dict(vars(obj))))

    def _function(self, fn: types.FunctionType) -> Any:
        library = _is_library_function(fn)
        if library and not self.portable:
            return _Identity(fn)
        if library and len(self.path) > 1:  # a library helper: named, not expanded
            return ("function", fn.__module__, fn.__qualname__)
        cells = tuple(self.key(_cell_contents(cell)) for cell in fn.__closure__ or ())
        names = () if library else sorted(_global_names(fn.__code__) & fn.__globals__.keys())
        global_values = tuple((name, self.key(fn.__globals__[name])) for name in names)
        return ("function", fn.__qualname__, self._code(fn.__code__), self.key(fn.__defaults__),
                self.key(fn.__kwdefaults__), cells, global_values)

    def _code(self, code: types.CodeType) -> Any:
        if not self.portable:
            return code  # compares bytecode, constants, names and line table
        digest = hashlib.sha256(code.co_code).hexdigest()
        return ("code", code.co_name, digest, tuple(self.key(c) for c in code.co_consts), code.co_names)

    def _numpy(self, array: np.ndarray) -> Any:
        if array.dtype.hasobject or (array.nbytes > _MAX_KEY_ARRAY_BYTES and not self.portable):
            raise _TooLarge
        return ("ndarray", _dtype_name(array.dtype), array.shape, _sha256(array))

    def _device_array(self, array: jax.Array) -> Any:
        if isinstance(array, jax.core.Tracer) or not array.is_fully_addressable or array.is_deleted():
            return self._identity(array)
        if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
            impl = str(jax.random.key_impl(array))
            return ("key", impl, self._device_array(jax.random.key_data(array)))
        if array.size > _MAX_KEY_DEVICE_ELEMENTS:
            return ("jax", _dtype_name(array.dtype), array.shape) if self.portable else _Identity(array)
        description = ("jax", _dtype_name(array.dtype), array.shape, _sha256(np.asarray(array)))
        return description if self.portable else description + (array.sharding,)

    def _type(self, kind: type) -> Any:
        return f"{kind.__module__}.{kind.__qualname__}" if self.portable else kind

    def _identity(self, obj: Any) -> Any:
        if not self.portable:
            return _Identity(obj)
        if isinstance(obj, types.ModuleType):
            return ("module", obj.__name__)
        return ("type" if isinstance(obj, type) else "object", self._type(obj if isinstance(obj, type) else type(obj)))


def _fingerprint(obj: Any) -> str | None:
    """A digest of what ``obj`` computes, reproducible in another process (``None``: too large)."""
    try:
        description = _Structure(portable=True).key(obj)
    except Exception:  # noqa: BLE001 -- too large, or an object that resists description
        return None
    return "sha256:" + hashlib.sha256(repr(description).encode()).hexdigest()[:16]


class _ProgramCache:
    """The last few compiled programs, keyed by what the callables they close over compute.

    Rebuilding a loss or an optimizer (``optax.adam(0.05)`` in a re-run notebook cell) makes
    new function objects that compute the same thing; they find the program compiled before
    instead of compiling, and keeping, another. At most ``size`` programs are kept, so a
    stream of closures that differ does not grow memory. Build the loss and the optimizer
    once, outside the cell that calls :func:`fit`, to be sure of reuse (an object reached
    only through a fresh, unhashable closure compiles anew).
    """

    def __init__(self, build: Callable[..., Any], size: int = _PROGRAM_CACHE_SIZE):
        self._build = build
        self._size = size
        self._programs: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._programs)

    def __call__(self, *parts: Any) -> Any:
        try:
            describe = _Structure()
            key = tuple(describe.key(part) for part in parts)
            hash(key)
        except Exception:  # noqa: BLE001 -- too large, or an object that resists description
            return self._build(*parts)
        program = self._programs.pop(key, None)
        if program is None:
            program = self._build(*parts)
        self._programs[key] = program
        while len(self._programs) > self._size:
            self._programs.popitem(last=False)
        return program
