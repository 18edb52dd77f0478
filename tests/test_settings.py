"""settings.validate_params on config values: one InvalidParameterError naming the config key,
before any embedding or fitting (the CLI turns it into exit 2; see test_router.py)."""

from __future__ import annotations

import pytest

from lm_router_plugin.errors import InvalidParameterError
from lm_router_plugin.router.predictors import KNNPredictor
from lm_router_plugin.settings import Settings, validate_params


def _validate(config: dict) -> None:
    validate_params(Settings.from_dict(config).router_params())


@pytest.mark.parametrize("config, message", [
    ({"predictor": {"name": 5}}, "predictor.name: must be a string naming a registered "
                                 "predictor (e.g. knn), got 5"),
    ({"predictor": {"name": None}}, "predictor.name: must be a string"),
    ({"predictor": {"name": ["a", "b"]}}, "predictor.name: must be a string"),
    ({"index": {"kind": None}}, "index.kind: must be a string among auto, exact, "
                                "faiss-flat, faiss-ivf, got None"),
    ({"embedder": {"device": "cuda:0,"}}, "embedder.device: empty device name in 'cuda:0,'"),
    ({"predictor": {"params": {"n_neighbors": 0}}},
     "predictor.params.n_neighbors: must be >= 1, got 0"),
    ({"predictor": {"params": {"n_neighbors": "x"}}},
     "predictor.params.n_neighbors: must be an integer >= 1, got 'x'"),
    ({"predictor": {"target": 5}}, "predictor.target: must be one of correct, score, got 5"),
])
def test_bad_config_values_name_their_key(config, message):
    with pytest.raises(InvalidParameterError) as info:
        _validate(config)
    assert str(info.value).startswith(message), str(info.value)


def test_good_values_pass_and_knn_checks_its_k_when_built():
    _validate({"embedder": {"device": "cpu,cuda:1"}, "predictor": {"params": {"n_neighbors": 3}}})
    with pytest.raises(ValueError, match="n_neighbors must be an integer >= 1, got 2.5"):
        KNNPredictor(n_neighbors=2.5)
