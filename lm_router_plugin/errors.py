"""Exceptions of lm-router-plugin.

Every error a user can cause derives from :class:`LMRouterError`; the CLI prints its message
(one line naming the file, line or key, and what to do). One exit-code rule: a
:class:`UsageError` (an option's value is wrong: an unknown adapter, predictor, decider or
model name, an out-of-range constant, a bad config file) exits with 2, like click's own
usage errors; every other error (the data: a malformed file, an empty store, a conflict)
exits with 1.
"""

from __future__ import annotations


class LMRouterError(Exception):
    """Base class for all errors of this package that are shown to the user."""


class InputError(LMRouterError, ValueError):
    """An input file is malformed: names the file, the line or key, and the fix."""

    def __init__(self, path: object, problem: str, *, line: int | None = None, hint: str = ""):
        where = f"{path}" if line is None else f"{path} line {line}"
        message = f"{where}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.path = path
        self.line = line

    def __reduce__(self):  # raised in an ingest worker process: pickled back to the parent
        return _restore_input_error, (type(self), str(self), self.path, self.line)


def _restore_input_error(cls: type, message: str, path: object, line: int | None) -> InputError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.path, err.line = path, line
    return err


class UsageError(LMRouterError):
    """The command was asked for something that cannot be (exit code 2)."""


class InvalidParameterError(UsageError, ValueError):
    """A setting is out of range; names it by its config key (e.g. ``decision.sigma``)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.param = name


class ConfigError(UsageError, InputError):
    """A ``--config`` file is malformed or has an unknown key (names the file and key)."""


class SchemaError(LMRouterError, ValueError):
    """A table does not have the columns or values the correctness table needs."""


class ConflictError(LMRouterError, ValueError):
    """Two sources give different values for the same (task, instance, model) key."""


class UnknownNameError(UsageError, KeyError):
    """An adapter, predictor, task or model name is not known (message has did-you-mean)."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class EmptyStoreError(LMRouterError, ValueError):
    """The store holds no correctness table yet."""


class NotFittedError(LMRouterError, ValueError, AttributeError):
    """A router or predictor was used before ``fit``."""


class EmbedderNotFoundError(LMRouterError, OSError):
    """The sentence-transformers model cannot be loaded offline."""


class FaissNotInstalledError(LMRouterError, ImportError):
    """An explicit faiss index was asked for, but faiss-cpu is not installed."""


class PluginOutputError(LMRouterError, ValueError):
    """A plugin (decider, predictor, adapter) failed or returned something outside its
    contract: names the plugin, what it returned and what was expected."""
