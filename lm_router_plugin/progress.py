"""Progress bars (tqdm, on stderr) that follow the package's log level.

    >>> for path in progress_bar(paths, desc="reading", unit="file"):
    ...     ...
    >>> with progress_bar(total=n_rows, desc="rows", unit="row") as bar:
    ...     bar.update(len(batch))

A bar is shown only while the ``lm_router_plugin`` logger is enabled for INFO: the CLI sets
that logger to INFO, and to WARNING under ``-q``, which silences every bar (ingest's, and the
embedders' own through :func:`progress_enabled`). A library user who configured no logging
gets no bars (the root logger's WARNING).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

PACKAGE_LOGGER = "lm_router_plugin"


def progress_enabled() -> bool:
    """True when progress should be shown: the package logger is enabled for INFO."""
    return logging.getLogger(PACKAGE_LOGGER).isEnabledFor(logging.INFO)


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None,
                 desc: str | None = None, unit: str = "it", leave: bool = False,
                 **kwargs: Any) -> Any:
    """A ``tqdm`` on stderr, disabled unless :func:`progress_enabled` (then it costs an
    attribute check per step). ``leave=False``: the bar is cleared when it closes, so the
    log lines that follow stay readable."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=not progress_enabled(), dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def library_bars(*modules: Any) -> Iterator[None]:
    """Within the block, unless :func:`progress_enabled`: no progress bars from transformers
    and huggingface_hub (model loading, downloads), nor from the ``tqdm`` that each of
    ``modules`` imported (e.g. model2vec's distillation). Restored afterwards."""
    if progress_enabled():
        yield
        return
    undo = []
    try:
        import transformers.utils.logging as tf_logging
        if tf_logging.is_progress_bar_enabled():
            tf_logging.disable_progress_bar()
            undo.append(tf_logging.enable_progress_bar)
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import huggingface_hub.utils as hub_utils
        if not hub_utils.are_progress_bars_disabled():
            hub_utils.disable_progress_bars()
            undo.append(hub_utils.enable_progress_bars)
    except ImportError:  # pragma: no cover
        pass
    for module in modules:
        original = getattr(module, "tqdm", None)
        if original is not None:
            module.tqdm = functools.partial(original, disable=True)
            undo.append(functools.partial(setattr, module, "tqdm", original))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


__all__ = ["library_bars", "progress_bar", "progress_enabled"]
