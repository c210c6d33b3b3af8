"""Choice maps: hierarchical, immutable maps from addresses to values, and selections.

A :class:`ChoiceMap` is a pytree, so it passes through ``jit``, ``vmap``, ``grad`` and
``lax.scan`` like any array container. Under the ``vmap``/``scan``/``repeat``
combinators its leaves carry a leading axis.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Union

import jax
from probgen.core.errors import ArgumentError

Address = Union[str, tuple]


def normalize_address(address: Address) -> tuple[str, ...]:
    """``"z"`` -> ``("z",)``; ``("layer", "w")`` stays; ``"a/b"`` is not split."""
    if isinstance(address, str):
        return (address,)
    if isinstance(address, tuple) and address and all(isinstance(a, str) for a in address):
        return address
    raise ArgumentError(
        f"an address is a string or a non-empty tuple of strings, got {address!r}"
    )


def format_address(address: Address) -> str:
    parts = normalize_address(address) if address != () else ()
    return "/".join(parts) if parts else "<root>"


@jax.tree_util.register_pytree_node_class
class ChoiceMap(Mapping):
    """An immutable map from (hierarchical) addresses to values.

    Build one from a dict (nested dicts or tuple keys make hierarchy), read with
    ``cm["z"]`` or ``cm["layer", "w"]``, combine with :meth:`merge`, restrict with
    :meth:`filter`.

    Example:
        >>> import probgen as pg
        >>> cm = pg.ChoiceMap({"z": 1.0, ("layer", "w"): 2.0})
        >>> float(cm["layer", "w"]), cm.addresses()
        (2.0, [('layer', 'w'), ('z',)])
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping | None = None):
        built: dict[str, Any] = {}
        for key, value in (entries or {}).items():
            path = normalize_address(key)
            if isinstance(value, Mapping) and not isinstance(value, ChoiceMap):
                value = ChoiceMap(value)
            _insert(built, path, value)
        self._entries = dict(sorted(built.items()))

    # -- pytree -----------------------------------------------------------------
    def tree_flatten(self):
        return tuple(self._entries.values()), tuple(self._entries.keys())

    @classmethod
    def tree_unflatten(cls, keys, values):
        cm = object.__new__(cls)
        cm._entries = dict(zip(keys, values))
        return cm

    # -- reading ----------------------------------------------------------------
    def __getitem__(self, address: Address) -> Any:
        node: Any = self
        path = normalize_address(address)
        for i, part in enumerate(path):
            if not isinstance(node, ChoiceMap) or part not in node._entries:
                raise KeyError(
                    f"no choice at address {format_address(path)!r}"
                    f" (available: {', '.join(format_address(a) for a in self.addresses()) or 'none'})"
                )
            node = node._entries[part]
        return node

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, address: object) -> bool:
        try:
            self[address]  # type: ignore[index]
            return True
        except (KeyError, TypeError):
            return False

    def get_submap(self, address: Address) -> "ChoiceMap":
        """The choice map under ``address`` (empty when there is none)."""
        node = self._entries.get(address) if isinstance(address, str) else None
        if isinstance(address, tuple):
            try:
                node = self[address]
            except KeyError:
                node = None
        if node is None:
            return EMPTY
        if not isinstance(node, ChoiceMap):
            raise ArgumentError(f"address {format_address(address)!r} holds a value, not a choice map")
        return node

    def get_value(self, address: str) -> Any:
        """The leaf value stored directly under ``address``, or None."""
        node = self._entries.get(address)
        return None if isinstance(node, ChoiceMap) else node

    def is_empty(self) -> bool:
        return not self._entries

    def addresses(self) -> list[tuple[str, ...]]:
        """All leaf addresses, as tuples, in sorted order."""
        out: list[tuple[str, ...]] = []
        for key, value in self._entries.items():
            if isinstance(value, ChoiceMap):
                out.extend((key,) + sub for sub in value.addresses())
            else:
                out.append((key,))
        return out

    def to_dict(self) -> dict[tuple[str, ...], Any]:
        """A flat ``{address_tuple: value}`` dict."""
        return {a: self[a] for a in self.addresses()}

    # -- building ---------------------------------------------------------------
    def set(self, address: Address, value: Any) -> "ChoiceMap":
        """A copy with ``value`` at ``address``."""
        return self.merge(ChoiceMap({normalize_address(address): value}))

    def merge(self, other: "ChoiceMap | Mapping") -> "ChoiceMap":
        """Union of two choice maps; where both hold a value, ``other`` wins."""
        other = as_choicemap(other)
        merged = dict(self._entries)
        for key, value in other._entries.items():
            mine = merged.get(key)
            if isinstance(mine, ChoiceMap) and isinstance(value, ChoiceMap):
                merged[key] = mine.merge(value)
            else:
                merged[key] = value
        return ChoiceMap.tree_unflatten(tuple(sorted(merged)), [merged[k] for k in sorted(merged)])

    def filter(self, selection: "Selection | Iterable[Address]") -> "ChoiceMap":
        """Keep only the addresses in ``selection`` (a selected prefix keeps all below it)."""
        selection = as_selection(selection)
        kept: dict[str, Any] = {}
        for key, value in self._entries.items():
            sub = selection.subselection(key)
            if sub is None:
                continue
            if sub is ALL:
                kept[key] = value
            elif isinstance(value, ChoiceMap):
                filtered = value.filter(sub)
                if not filtered.is_empty():
                    kept[key] = filtered
        return ChoiceMap.tree_unflatten(tuple(kept), list(kept.values()))

    def __repr__(self) -> str:
        items = ", ".join(f"{format_address(a)}: {_short(v)}" for a, v in self.to_dict().items())
        return f"ChoiceMap({{{items}}})"


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is None or shape == ():
        try:
            return f"{float(value):.4g}"
        except Exception:  # tracers and the like
            return type(value).__name__
    return f"{getattr(value, 'dtype', '')}{list(shape)}"


def _insert(entries: dict, path: tuple[str, ...], value: Any) -> None:
    head, rest = path[0], path[1:]
    if not rest:
        existing = entries.get(head)
        if isinstance(existing, ChoiceMap) and isinstance(value, ChoiceMap):
            entries[head] = existing.merge(value)
        else:
            entries[head] = value
        return
    child = entries.get(head)
    child_entries = dict(child._entries) if isinstance(child, ChoiceMap) else {}
    _insert(child_entries, rest, value)
    entries[head] = ChoiceMap.tree_unflatten(
        tuple(sorted(child_entries)), [child_entries[k] for k in sorted(child_entries)]
    )


EMPTY = ChoiceMap()


def as_choicemap(obj: "ChoiceMap | Mapping | None") -> ChoiceMap:
    """Coerce ``None``, a dict or a ChoiceMap to a ChoiceMap."""
    if obj is None:
        return EMPTY
    if isinstance(obj, ChoiceMap):
        return obj
    if isinstance(obj, Mapping):
        return ChoiceMap(obj)
    raise ArgumentError(f"expected a ChoiceMap or a dict of choices, got {type(obj).__name__}")


class Selection:
    """A set of addresses (a selected prefix selects everything below it).

    Example:
        >>> import probgen as pg
        >>> sel = pg.select("z", ("layer", "w"))
        >>> sel.contains(("layer", "w")), sel.contains("x")
        (True, False)
    """

    def __init__(self, addresses: Iterable[Address] = (), complement: bool = False):
        self._paths = frozenset(normalize_address(a) for a in addresses)
        self._complement = complement

    def subselection(self, key: str) -> "Selection | None":
        """The selection below ``key``: ALL, a narrower Selection, or None."""
        if (key,) in self._paths:
            inner: Selection | None = ALL
        else:
            below = [p[1:] for p in self._paths if p[0] == key and len(p) > 1]
            inner = Selection(below) if below else None
        if not self._complement:
            return inner
        if inner is None:
            return ALL
        if inner is ALL:
            return None
        return Selection(inner._paths, complement=True)

    def contains(self, address: Address) -> bool:
        node: Selection | None = self
        for part in normalize_address(address):
            if node is ALL:
                return True
            node = node.subselection(part)  # type: ignore[union-attr]
            if node is None:
                return False
        return node is not None

    def complement(self) -> "Selection":
        """Every address not in this selection."""
        return Selection(self._paths, complement=not self._complement)

    def __repr__(self) -> str:
        inner = ", ".join(sorted(format_address(p) for p in self._paths))
        return f"Selection({'~' if self._complement else ''}{{{inner}}})"


class _All(Selection):
    def __init__(self):
        super().__init__(())

    def subselection(self, key: str) -> Selection:
        return self

    def contains(self, address: Address) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL"


ALL = _All()


def select(*addresses: Address) -> Selection:
    """A selection of addresses, for :meth:`ChoiceMap.filter` and MCMC moves.

    Example:
        >>> import probgen as pg
        >>> cm = pg.ChoiceMap({"a": 1.0, "b": 2.0})
        >>> cm.filter(pg.select("a")).addresses()
        [('a',)]
    """
    return Selection(addresses)


def as_selection(obj: "Selection | Iterable[Address] | Address") -> Selection:
    if isinstance(obj, Selection):
        return obj
    if isinstance(obj, (str, tuple)):
        return Selection([obj])
    return Selection(list(obj))
