"""The embedding cache finds every key it stored, including hashes that end in zero bytes
(numpy's fixed-width bytes dtype would silently strip them)."""

from __future__ import annotations

import numpy as np

from lm_router_plugin.embedding.embedders import EmbeddingCache, text_key


def test_keys_with_trailing_zero_bytes_round_trip(tmp_path):
    texts = [f"prompt {i}" for i in range(3000)]
    keys = [text_key(t) for t in texts]
    assert any(k.endswith(b"\0") for k in keys)  # ~1 in 256 hashes; 3000 make it certain
    vectors = np.random.default_rng(0).random((3000, 4), dtype=np.float32)
    EmbeddingCache(tmp_path).add(keys[:1000], vectors[:1000])
    EmbeddingCache(tmp_path).add(keys[1000:], vectors[1000:])  # a second shard
    found, got = EmbeddingCache(tmp_path).get(keys[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, vectors[::-1])
    found, _ = EmbeddingCache(tmp_path).get([text_key("never stored")])
    assert not found.any()


def test_max_seq_length_truncates_and_has_its_own_cache(tmp_path):
    from lm_router_plugin.embedding.embedders import SentenceTransformerEmbedder, embed_texts
    from lm_router_plugin.store.store import Store

    store = Store(tmp_path)
    long_text = "The quick brown fox jumps over the lazy dog near the river bank. " * 4
    full = SentenceTransformerEmbedder()
    short = SentenceTransformerEmbedder(max_seq_length=8)
    assert short.id == full.id + "@max8"
    assert store.embeddings_dir(short.id) != store.embeddings_dir(full.id)
    a = embed_texts([long_text], full, store)
    b = embed_texts([long_text], short, store)
    assert float(a[0] @ b[0]) < 0.99  # truncated to 8 tokens: a different vector
    assert short.model.max_seq_length == 8
