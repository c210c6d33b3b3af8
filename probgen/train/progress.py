"""Progress reporting for training: a tqdm bar (terminal or notebook), updated per chunk."""

from __future__ import annotations

import os
import sys
from typing import Any


def is_interactive() -> bool:
    """Whether a person is likely watching: a Jupyter kernel or a terminal on stderr, not CI.

    Example:
        >>> isinstance(is_interactive(), bool)
        True
    """
    if os.environ.get("CI") or os.environ.get("PROBGEN_NO_PROGRESS"):
        return False
    try:
        from IPython import get_ipython  # noqa: PLC0415

        shell = get_ipython()
        if shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell":
            return True
    except ImportError:
        pass
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(progress: bool | None, total: int, initial: int = 0, desc: str = "fit") -> Any:
    """A tqdm bar over ``total`` steps, or ``None`` when silent.

    Args:
      progress: ``True`` always shows, ``False`` never, ``None`` shows only when
        :func:`is_interactive` (so CI logs stay clean).
      total: the total number of steps.
      initial: steps already done (a resumed run).
      desc: the bar's label.

    Returns:
      A ``tqdm.auto.tqdm`` instance (notebook widget in Jupyter) or ``None``.

    Example:
        >>> progress_bar(False, 100) is None
        True
    """
    show = is_interactive() if progress is None else bool(progress)
    if not show:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
