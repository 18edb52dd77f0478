"""Name -> class registries filled lazily from entry points.

Built-in adapters, predictors and deciders are registered through the same entry-point
groups as third-party plugins (``lm_router.adapters``, ``lm_router.predictors``,
``lm_router.deciders``)::

    from lm_router_plugin.registry import adapters
    AdapterClass = adapters.get("lm-eval")    # imports the module on first use

Tests register fakes with ``adapters.register("fake", FakeAdapter)`` and remove them with
``adapters.unregister("fake")``.
"""

from __future__ import annotations

import difflib
import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from .errors import LMRouterError, UnknownNameError

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    """'Unknown adapter 'x'. Did you mean: y? Available: a, b, c' (at most 20 names listed)."""
    if isinstance(name, str):
        message = f"Unknown {kind} '{name}'."
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        if close:
            message += f" Did you mean: {', '.join(close)}?"
    else:  # e.g. a config's `name: 5` or `kind: null`: difflib needs a string
        message = f"The {kind} name must be a string, got {name!r}."
    shown = sorted(available)[:20]
    more = f" (and {len(available) - 20} more)" if len(available) > 20 else ""
    return message + f" Available: {', '.join(shown) or 'none'}{more}"


class PluginError(LMRouterError, ImportError):
    """A plugin's entry point cannot be used: it fails to import, or its name is taken."""


def _describe(ep: EntryPoint) -> str:
    """``[group] name = value`` (from the distribution ``dist``), as in entry_points.txt."""
    dist = getattr(ep, "dist", None)
    source = f" (from {dist.name} {dist.version})" if dist is not None else ""
    return f"entry point [{ep.group}] {ep.name} = {ep.value}{source}"


class Registry(Generic[T]):
    """A thread-safe map from names to classes; entry points are loaded on first ``get``."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._targets: dict[str, T | EntryPoint] = {}
        # names declared by two different entry points: an error when asked for, so one
        # plugin reusing a name (even a built-in one) does not break every other name
        self._clashes: dict[str, list[EntryPoint]] = {}
        self._discovered = False
        self._lock = threading.Lock()

    def _discover(self) -> None:
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            declared: dict[str, list[EntryPoint]] = {}
            for ep in entry_points(group=self.group):
                # An editable install and a regular one can both declare the same target.
                same = declared.setdefault(ep.name, [])
                if all(other.value != ep.value for other in same):
                    same.append(ep)
                self._targets.setdefault(ep.name, ep)
            self._clashes = {name: eps for name, eps in declared.items() if len(eps) > 1}
            self._discovered = True

    def register(self, name: str, target: T) -> None:
        """Register ``target`` under ``name``; a name taken by another target is an error."""
        self._discover()
        existing = self._targets.get(name)
        if existing is not None and existing is not target:
            shown = existing.value if isinstance(existing, EntryPoint) else existing
            raise ValueError(f"{self.kind} '{name}' already registered (existing={shown}, "
                             f"new={target})")
        self._targets[name] = target

    def unregister(self, name: str) -> None:
        self._targets.pop(name, None)
        self._clashes.pop(name, None)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._targets)

    def get(self, name: str) -> T:
        """The class registered as ``name``.

        Raises:
            UnknownNameError: with did-you-mean suggestions and the available names.
            PluginError: two entry points declare ``name``, or its entry point fails to load
                (names the entry point and the cause).
        """
        self._discover()
        try:
            target = self._targets[name]
        except (KeyError, TypeError) as exc:  # TypeError: an unhashable name (a list)
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names())) from exc
        clash = self._clashes.get(name)
        if clash:
            raise PluginError(
                f"{self.kind} '{name}' is declared by several installed packages: "
                + "; ".join(_describe(ep) for ep in clash)
                + ". Uninstall the plugin that reuses the name, or rename its entry point")
        if isinstance(target, EntryPoint):
            try:
                target = target.load()
            except Exception as exc:  # whatever the plugin's import raises
                cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
                raise PluginError(
                    f"cannot load the {self.kind} '{name}' ({_describe(target)}): {cause}. "
                    "Fix or reinstall the package that declares it, or uninstall it") from exc
            self._targets[name] = target
        return target


adapters: Registry = Registry("adapter", "lm_router.adapters")
predictors: Registry = Registry("predictor", "lm_router.predictors")
deciders: Registry = Registry("decider", "lm_router.deciders")
