"""The router's settings, grouped by kind and validated in one place.

    >>> settings = load_settings("router.yaml")            # --config FILE
    >>> settings = Settings.from_dict({"decision": {"eta": 0.7}})
    >>> Router(**settings.router_params())

Four kinds: the embedder (what turns texts into vectors), the predictor (per-input
correctness), the index (neighbour search over the reference inputs) and the decision
constants (METHOD.md's kappa, sigma, t, eta and the Monte Carlo). A ``--config`` YAML has
one mapping per kind; every key is optional and an unknown one is an error with
did-you-mean (docs/configuration.md lists them with their defaults).

:func:`validate_params` is the single range check of every constant (``Router.fit`` and
every command call it before any embedding).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InvalidParameterError
from .router.neighbors import AUTO_FAISS_MIN_REFS, INDEX_KINDS, check_index_kind


@dataclass
class EmbedderSettings:
    name: str | None = None  # None: all-MiniLM-L6-v2 (packaged); "static"; a name or folder
    device: str | None = None  # cpu, cuda, cuda:0,cuda:1 (not part of the fitted router)
    max_seq_length: int | None = None  # tokens; None: the embedder's own limit


@dataclass
class PredictorSettings:
    name: str = "knn"  # a registered predictor (entry point lm_router.predictors)
    k: int = 5  # neighbours of the kNN predictor (any predictor's n_neighbors)
    params: dict[str, Any] = field(default_factory=dict)
    target: str = "correct"  # what it learns: correct (0/1) | score (raw metric values)
    # reference inputs per doc in the task-level S1 of the stacked switch (0: the kNN's S1)
    task_k: int = 200


@dataclass
class IndexSettings:
    kind: str = "auto"  # auto | exact | faiss-flat | faiss-ivf
    threshold: int = AUTO_FAISS_MIN_REFS  # reference inputs from which auto uses faiss
    nlist: int | None = None  # faiss-ivf lists (None: round(sqrt(reference inputs)))
    nprobe: int | None = None  # faiss-ivf lists probed per query (None: ceil(nlist / 8))


@dataclass
class DecisionConstants:
    kappa: int = 19  # neighbours for the task distance u
    sigma: float = 0.09  # kernel bandwidth of the confidence p
    t: float = 0.5  # threshold on g for S2/S3
    eta: float = 0.6  # S3 keeps its choice only if P(it beats BMA) > eta
    n_draws: int = 1000  # Monte Carlo draws of that test
    seed: int = 0  # seed of every random draw


#: Router keyword -> (kind, key in the config file)
_ROUTER_KEYS = {
    "embedder": ("embedder", "name"), "device": ("embedder", "device"),
    "max_seq_length": ("embedder", "max_seq_length"),
    "predictor": ("predictor", "name"), "k": ("predictor", "k"),
    "predictor_params": ("predictor", "params"), "target": ("predictor", "target"),
    "task_k": ("predictor", "task_k"),
    "index": ("index", "kind"), "index_threshold": ("index", "threshold"),
    "nlist": ("index", "nlist"), "nprobe": ("index", "nprobe"),
    "kappa": ("decision", "kappa"), "sigma": ("decision", "sigma"), "t": ("decision", "t"),
    "eta": ("decision", "eta"), "n_draws": ("decision", "n_draws"),
    "seed": ("decision", "seed"),
}


@dataclass
class Settings:
    """All settings of a router, by kind (defaults: METHOD.md's constants)."""

    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    predictor: PredictorSettings = field(default_factory=PredictorSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    decision: DecisionConstants = field(default_factory=DecisionConstants)

    def router_params(self) -> dict[str, Any]:
        """The flat keyword arguments of ``Router``."""
        return {kw: getattr(getattr(self, kind), key)
                for kw, (kind, key) in _ROUTER_KEYS.items()}

    @classmethod
    def from_router_params(cls, **params: Any) -> Settings:
        out = cls()
        for kw, value in params.items():
            if kw not in _ROUTER_KEYS:
                raise InvalidParameterError(kw, _did_you_mean("setting", kw, list(_ROUTER_KEYS)))
            kind, key = _ROUTER_KEYS[kw]
            setattr(getattr(out, kind), key, value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: object = "settings") -> Settings:
        """From the nested mapping of a config file; unknown kinds or keys raise InputError
        naming ``source`` and the key, with did-you-mean."""
        out = cls()
        if data is None:
            return out
        if not isinstance(data, dict):
            raise ConfigError(source, "expected a mapping of embedder / predictor / index / "
                             f"decision settings, got {type(data).__name__}")
        kinds = [f.name for f in fields(cls)]
        for kind, values in data.items():
            if kind not in kinds:
                raise ConfigError(source, _did_you_mean("section", str(kind), kinds))
            if values is None:
                continue
            group = getattr(out, kind)
            keys = [f.name for f in fields(group)]
            if not isinstance(values, dict):
                raise ConfigError(source, f"'{kind}' must be a mapping of {', '.join(keys)}")
            for key, value in values.items():
                if key not in keys:
                    raise ConfigError(source, _did_you_mean(f"key in '{kind}'", str(key), keys))
                setattr(group, key, value)
        if out.predictor.params is None:
            out.predictor.params = {}
        if not isinstance(out.predictor.params, dict):
            raise ConfigError(source, "'predictor.params' must be a mapping KEY: VALUE")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def override(self, **params: Any) -> Settings:
        """A copy with the given Router keywords set (None values are ignored: an option
        not given on the command line keeps the config file's value)."""
        merged = {**self.router_params(), **{k: v for k, v in params.items() if v is not None}}
        return Settings.from_router_params(**merged)


def _did_you_mean(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Known: {', '.join(available)}"


def load_settings(source: Settings | dict | str | Path | None) -> Settings:
    """Settings from a Settings, a nested dict, a YAML file path (``--config``) or None
    (the defaults)."""
    if source is None:
        return Settings()
    if isinstance(source, Settings):
        return source
    if isinstance(source, dict):
        return Settings.from_dict(source)
    import yaml

    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read the config file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "not a UTF-8 text file", hint="give a YAML config") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(path, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                         line=mark.line + 1 if mark else None) from exc
    return Settings.from_dict(data, source=path)


def validate_params(params: dict[str, Any]) -> None:
    """Range-check every Router constant (flat keywords); raises InvalidParameterError
    naming the first bad one by its config key (e.g. ``decision.sigma``). Cheap: call it
    before any embedding or fitting."""
    from .registry import predictors

    def name(kw: str) -> str:
        kind, key = _ROUTER_KEYS[kw]
        return f"{kind}.{key}"

    def integer(kw: str, low: int) -> None:
        value = params[kw]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidParameterError(name(kw), f"must be an integer >= {low}, got {value!r}")

    def number(kw: str, low: float, high: float, low_open: bool = False) -> None:
        value = params[kw]
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
            and math.isfinite(value) and (value > low if low_open else value >= low) \
            and value <= high
        if not ok:
            bound = f"{'(' if low_open else '['}{low}, {high}]"
            raise InvalidParameterError(name(kw), f"must be a number in {bound}, got {value!r}")

    for kw, low in (("k", 1), ("kappa", 1), ("n_draws", 1), ("seed", 0),
                    ("index_threshold", 0), ("task_k", 0)):
        integer(kw, low)
    for kw in ("nlist", "nprobe", "max_seq_length"):
        if params[kw] is not None:
            integer(kw, 1)
    # names looked up in a registry: a non-string (YAML `name: 5`, `kind: null`) would fail
    # inside the lookup with a TypeError, so it is reported here by its key
    for kw, what in (("predictor", "naming a registered predictor (e.g. knn)"),
                     ("index", f"among {', '.join(INDEX_KINDS)}")):
        if not isinstance(params[kw], str):
            raise InvalidParameterError(name(kw), f"must be a string {what}, got "
                                        f"{params[kw]!r}")
    check_index_kind(params["index"])  # unknown kind; faiss kind without faiss: install hint
    from .router.pool import check_target

    check_target(params["target"], name("target"))
    number("sigma", 0.0, math.inf, low_open=True)
    number("t", 0.0, 1.0)
    number("eta", 0.0, 1.0)
    for kw in ("embedder", "device"):
        if params[kw] is not None and not isinstance(params[kw], str):
            raise InvalidParameterError(name(kw), f"must be a string, got {params[kw]!r}")
    from .embedding.embedders import parse_devices

    try:  # as the CLI's --device check, so a config's "cuda:0," fails before any work
        parse_devices(params["device"])
    except ValueError as exc:
        raise InvalidParameterError(name("device"), str(exc)) from exc
    cls = predictors.get(params["predictor"])  # unknown name: did-you-mean
    extra = params["predictor_params"] or {}
    unknown = set(extra) - set(cls.param_names())
    if unknown:
        raise InvalidParameterError(
            "predictor.params", f"{params['predictor']} has no parameter(s) "
            f"{sorted(unknown, key=str)}; it takes {cls.param_names()}")
    _check_predictor_values(cls, params)


def _check_predictor_values(cls: type, params: dict[str, Any]) -> None:
    """Build the predictor as Router.make_predictor does, so that a bad value (e.g.
    ``n_neighbors: 0``) is a config error now rather than a traceback once fitting runs."""
    from .router.predictors import build_predictor

    try:
        build_predictor(cls, params["predictor_params"], params["k"])
    except (TypeError, ValueError) as exc:
        message = str(exc)
        # name the key the message is about ("n_neighbors must be ..." -> its config key)
        key = next((k for k in params["predictor_params"] or {}
                    if isinstance(k, str) and message.startswith(f"{k} ")), None)
        if key is None:
            raise InvalidParameterError("predictor.params", message) from exc
        raise InvalidParameterError(f"predictor.params.{key}",
                                    message[len(key) + 1:]) from exc


__all__ = ["DecisionConstants", "EmbedderSettings", "IndexSettings", "InvalidParameterError",
           "PredictorSettings", "Settings", "load_settings", "validate_params"]
