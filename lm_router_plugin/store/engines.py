"""Where the slow, parallel steps run: ``local`` (this machine's processes: ingest.py's
process pool, embedders.py's in-process model) or ``ray`` (tasks and actors of a Ray
cluster). Ray is optional (``pip install 'lm-router-plugin[ray]'``) and imported only here,
only when the ray engine is asked for.

    >>> with RayEngine() as engine:            # RAY_ADDRESS, else a local cluster for the block
    ...     ingest("lm-eval", ["runs/"], Store("lm-router-store"), engine=engine)
    ...     embed_texts(texts, make_embedder(), store, engine=engine)

What runs where with the ray engine:

* ingest: each work unit of the adapter (lm-eval: the sample files of one task) is read and
  converted to dictionary-encoded Arrow record batches by one Ray task, which builds its own
  adapter from the adapter's *name*, options and thresholds (helm: one task per run folder;
  eee: per aggregate file with its samples); adapters without work units (table) are read
  whole by one task. The driver takes the results in unit order
  (the order the local engine uses), relays the workers' log records through its own
  loggers, merges and commits exactly as the local engine does: same rows, same order, same
  dictionaries, so the same store. The store is written only by the driver (single writer,
  under the store's lock); the input files must be readable at the same paths on every
  worker (a shared file system or a mounted object store).
* embedding: the texts missing from the store's embedding cache are split into chunks,
  embedded by actors (each loads the embedder once) and written into the same cache by the
  driver, chunk by chunk, in order.

Nothing is written before the cluster answers: an address that does not answer is one
:class:`RayConnectionError` naming it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import LMRouterError, UsageError
from ..registry import adapters
from .ingest import (
    _advance,
    _unit_files,
    adapter_rows,
    _Collect,
    _files_bar,
    check_unit,
    default_workers,
    largest_first,
    rows_to_ipc,
)
from .thresholds import Thresholds

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")
RAY_INSTALL = "pip install 'lm-router-plugin[ray]'"
#: Seconds to wait for a TCP connection to a Ray address before calling it unreachable
#: (ray.init itself retries for minutes on an address that does not answer).
CONNECT_TIMEOUT_S = 5.0
_PACKAGE_LOGGER = "lm_router_plugin"


class RayNotInstalledError(LMRouterError, ImportError):
    """``--engine ray`` was asked for, but the ray package is not installed."""


class RayConnectionError(LMRouterError, ConnectionError):
    """The Ray address does not answer (or no running cluster was found for ``auto``)."""


def make_engine(name: str = "local", address: str | None = None) -> RayEngine | None:
    """The engine for an ``--engine`` value: None for ``local`` (ingest.py and embedders.py
    run as they always did), a (not yet started) :class:`RayEngine` for ``ray``.

    Raises:
        UsageError: an unknown engine, or ``address`` given with the local engine.
        RayNotInstalledError: ``ray`` asked for without the ray package.
    """
    if name == "local":
        if address:
            raise UsageError("--ray-address needs --engine ray")
        return None
    if name == "ray":
        return RayEngine(address)
    raise UsageError(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(f"--engine ray needs Ray: {RAY_INSTALL}") from exc
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """("host", port) of ``host:port``, ``ray://host:port`` or ``[v6]:port``; None when the
    address has no port to test (left to ray.init)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _resolve_auto(ray: Any, address: str) -> str:
    """``auto``: the address of the cluster this machine last started (ray's own lookup:
    ``ray start``'s record, else a running GCS process); RayConnectionError when none."""
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # pragma: no cover - a Ray without this private helper: ray.init decides
        return address
    try:
        return canonicalize_bootstrap_address_or_die(address)
    except (ConnectionError, ValueError) as exc:
        raise RayConnectionError(
            f"Ray address {address!r}: no running Ray cluster found on this machine ({exc}). "
            "Start one with 'ray start --head', or pass --ray-address HOST:PORT of a running "
            "cluster, or leave RAY_ADDRESS and --ray-address unset to start a local cluster "
            "for this command; nothing was written") from exc


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """RayConnectionError unless something accepts a TCP connection at ``address``'s host
    and port within ``timeout`` seconds (the cluster's GCS, or its Ray Client server for
    ``ray://``)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RayConnectionError(
            f"Ray address {address!r} does not answer ({reason} after at most {timeout:g} s). "
            "Check that the cluster is running ('ray status' on its head node) and that this "
            "address is its GCS HOST:PORT (default port 6379; ray://HOST:10001 for Ray Client), "
            "or unset RAY_ADDRESS and --ray-address to start a local cluster for this "
            "command; nothing was written") from exc


class RayEngine:
    """Runs ingest's reading and the embedding of texts on a Ray cluster.

    Args:
        address: the cluster (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``); None: the
            ``RAY_ADDRESS`` environment variable, else a local cluster started by
            :meth:`start` (``num_cpus`` CPUs, default: the usable cores or
            ``$LM_ROUTER_WORKERS``) and shut down by :meth:`stop`.
        num_cpus: CPUs of a local cluster.

    A Ray already initialised in this process (``ray.init`` by the caller) is used as it
    is and left running. Use as a context manager, or call start/stop.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None):
        self.ray = _import_ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self._owned = False

    # -- cluster ---------------------------------------------------------------------------
    def __enter__(self) -> RayEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Connect to the cluster (or start the local one). RayConnectionError, before
        anything is read or written, when the address does not answer."""
        ray = self.ray
        if ray.is_initialized():
            return
        quiet = not logging.getLogger(_PACKAGE_LOGGER).isEnabledFor(logging.INFO)
        common = {"logging_level": logging.WARNING if quiet else logging.INFO,
                  "log_to_driver": True}
        address = self.address
        if address and address != "local":
            if address == "auto":
                address = _resolve_auto(ray, address)
            check_address(address)
            try:
                ray.init(address=address, **common)
            except Exception as exc:  # ConnectionError, a Ray/Python version mismatch, ...
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise RayConnectionError(
                    f"Ray address {self.address!r} does not answer as a Ray cluster "
                    f"({type(exc).__name__}: {first}). Check the address ('ray status' on the "
                    "head node; the same Ray and Python versions here and there) or unset "
                    "RAY_ADDRESS and --ray-address to start a local cluster; nothing was "
                    "written") from exc
            logger.info("connected to the Ray cluster at %s", self.address)
        else:
            cpus = self.num_cpus or default_workers()
            # address="local": a new cluster even when RAY_ADDRESS is set in the environment
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, **common)
            logger.info("started a local Ray cluster (%d CPUs) for this command", cpus)
        self._owned = True

    def stop(self) -> None:
        """Disconnect (and shut the local cluster down) if :meth:`start` connected."""
        if self._owned:
            self._owned = False
            self.ray.shutdown()

    def cpus(self) -> int:
        """CPUs of the cluster (at least 1)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    # -- ingest ----------------------------------------------------------------------------
    def read(self, adapter: Any, adapter_name: str, options: dict[str, Any],
             units: list[Any] | None, thresholds: Thresholds, where: str, paths: list[Path]
             ) -> tuple[list[pa.RecordBatch], dict[str, dict[str, Any]]]:
        """ingest.read_arrow's reading step on the cluster: (record batches in the order the
        local engine yields them, ARROW_DICT_SCHEMA; model metadata).

        ``units`` (the adapter's ``plan``): one task per unit, checked unit by unit
        (ingest.check_unit) and finished by ``adapter.finish`` here as in the local
        engine; None: one task reads ``paths`` whole. Worker errors are raised here as they
        were raised there (an InputError naming the file and line)."""
        ray = self.ray
        self.start()
        task = ray.remote(_read_task).options(num_cpus=1, max_retries=0)
        levels = _log_levels()
        whole = units is None
        work = [None] if whole else units
        refs: list[Any] = [None] * len(work)
        for i in [0] if whole else largest_first(adapter, units):  # as the local pool
            refs[i] = task.remote(adapter_name, options, thresholds, where, work[i],
                                  [str(p) for p in paths], levels)
        batches: list[pa.RecordBatch] = []
        states = []
        desc = f"reading ({adapter_name}, ray)"
        waiting = {ref: i for i, ref in enumerate(refs)}  # the tasks not finished yet
        with _files_bar(work if not whole else [paths], desc) as bar:
            for i, unit in enumerate(work):
                while refs[i] in waiting:  # progress as tasks finish (started largest first)
                    ready, _ = ray.wait(list(waiting), num_returns=1)
                    done = waiting.pop(ready[0])
                    bar.update(_unit_files(paths if whole else work[done]))
                data, state = _get(ray, refs[i])  # the results in plan order
                refs[i] = None  # the object store may free it
                for record in state.pop("_logs"):
                    logging.getLogger(record.name).handle(record)
                with pa.ipc.open_stream(data) as reader:
                    new = list(reader)
                del data
                batches.extend(new)
                states.append(state)
                if not whole:
                    check_unit(adapter, state)
                _advance(bar, paths if whole else unit, new, files=False)
        if whole:
            return batches, states[0]["model_metadata"]
        adapter.finish(states, paths)
        return batches, adapter.model_metadata

    # -- embedding -------------------------------------------------------------------------
    def chunk_rows(self, n_texts: int, largest: int) -> int:
        """Texts per chunk: ``largest`` (the local engine's cache chunk) or fewer, so that
        every CPU of the cluster gets at least one chunk."""
        return max(1, min(largest, math.ceil(n_texts / self.cpus())))

    def encode_chunks(self, recipe: tuple[Any, tuple, dict], chunks: Sequence[Sequence[str]]
                      ) -> Iterator[tuple[np.ndarray, int, int]]:
        """Embed ``chunks`` of texts on actors built by ``recipe`` = (factory, args, kwargs)
        (one embedder per actor, loaded once); yields, in chunk order, ((n, dim) float32
        unit rows, texts cut at the token limit, the limit) per chunk."""
        ray = self.ray
        self.start()
        if not chunks:
            return
        from ray.util import ActorPool

        levels = _log_levels()
        factory, args, kwargs = recipe
        device = kwargs.get("device")
        if device and "cuda" in str(device):
            # one GPU per actor, as Ray assigns it (CUDA_VISIBLE_DEVICES: the actor's "cuda");
            # not run here (no GPU on this project's machine)
            n_gpus = int(ray.cluster_resources().get("GPU", 0))
            if n_gpus < 1:
                raise LMRouterError(f"--device {device} with --engine ray: the Ray cluster "
                                    "has no GPU; leave --device out to embed on its CPUs")
            recipe = (factory, args, {**kwargs, "device": "cuda"})
            actor = ray.remote(_EmbedActor).options(num_cpus=1, num_gpus=1)
            n_actors = min(n_gpus, len(chunks))
        else:
            actor = ray.remote(_EmbedActor).options(num_cpus=1)
            n_actors = min(self.cpus(), len(chunks))
        actors = [actor.remote(recipe, levels) for _ in range(n_actors)]
        try:
            pool = ActorPool(actors)
            results = pool.map(lambda a, texts: a.encode.remote(list(texts)), list(chunks))
            while True:
                try:
                    vectors, n_cut, limit, logs = _next(ray, results)
                except StopIteration:
                    break
                for record in logs:
                    logging.getLogger(record.name).handle(record)
                yield vectors, n_cut, limit
        finally:
            for a in actors:
                ray.kill(a)


def _get(ray: Any, ref: Any) -> Any:
    """ray.get, with a worker's own exception raised as itself (not wrapped)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except ray.exceptions.RayError as exc:
        raise LMRouterError(f"a Ray worker failed: {exc}") from exc


def _next(ray: Any, results: Iterator[Any]) -> Any:
    try:
        return next(results)
    except ray.exceptions.RayActorError as exc:
        raise LMRouterError(f"a Ray embedding worker died: {exc}") from exc
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _log_levels() -> dict[str, int]:
    """The driver's effective levels of the root and the package logger, for the workers
    (forked processes inherit them; Ray workers are not forked)."""
    return {"": logging.getLogger().getEffectiveLevel(),
            _PACKAGE_LOGGER: logging.getLogger(_PACKAGE_LOGGER).getEffectiveLevel()}


class _Capture:
    """In a Ray worker, for one task: the root and package loggers at the driver's levels,
    their records collected (not printed) for the driver to emit; restored afterwards
    (a Ray worker process runs many tasks)."""

    def __init__(self, levels: dict[str, int]):
        self.levels = levels
        self.collector = _Collect()

    def __enter__(self) -> _Collect:
        self.saved = []
        for name, level in self.levels.items():
            lg = logging.getLogger(name or None)
            self.saved.append((lg, lg.handlers[:], lg.level, lg.propagate))
            lg.handlers[:] = [self.collector]
            lg.setLevel(level)
            if name:
                lg.propagate = False  # collected once, re-emitted by the driver's handlers
        return self.collector

    def __exit__(self, *exc: object) -> None:
        for lg, handlers, level, propagate in self.saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


def _read_task(adapter_name: str, options: dict[str, Any], thresholds: Thresholds,
               where: str, unit: Any, paths: list[str], levels: dict[str, int]
               ) -> tuple[bytes, dict[str, Any]]:
    """Ray task: (Arrow IPC stream of the record batches, state for the driver) of one work
    unit (``adapter.read_unit``), or of ``paths`` read whole when ``unit`` is None."""
    with _Capture(levels) as logs:
        adapter = adapters.get(adapter_name)(thresholds=thresholds, **options)
        if unit is None:
            data = rows_to_ipc(adapter_rows(adapter, adapter.read([Path(p) for p in paths])),
                               thresholds, where)
            state: dict[str, Any] = {"model_metadata": adapter.model_metadata}
        else:
            data = rows_to_ipc(adapter_rows(adapter, adapter.read_unit(unit)), thresholds,
                               where)
            state = adapter.unit_state()
    state["_logs"] = list(logs.records)
    return data, state


class _EmbedActor:
    """Ray actor: one embedder, loaded on first use and kept for every chunk it gets."""

    def __init__(self, recipe: tuple[Any, tuple, dict], levels: dict[str, int]):
        factory, args, kwargs = recipe
        # the package logger at WARNING at least: its INFO level would switch on the
        # embedders' progress bars, which from a worker would interleave on the driver
        self.levels = {**levels, _PACKAGE_LOGGER: max(levels[_PACKAGE_LOGGER], logging.WARNING)}
        self.embedder = factory(*args, **kwargs)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, int, int, list[logging.LogRecord]]:
        """((n, dim) float32 unit rows, texts cut at the token limit, the limit, log records)."""
        from ..embedding.embedders import _count_cut
        from ..embedding.vectors import l2_normalise

        with _Capture(self.levels) as logs:
            vectors = l2_normalise(self.embedder.encode(texts))
            n_cut, limit = _count_cut(self.embedder, texts)  # after encode: model loaded
        return vectors, n_cut, limit, list(logs.records)


__all__ = ["ENGINES", "RAY_INSTALL", "RayConnectionError", "RayEngine", "RayNotInstalledError",
           "check_address", "make_engine"]
