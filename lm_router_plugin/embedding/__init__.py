"""Turning texts into unit vectors: sentence-transformers embedders (embedders.py, with the
store's embedding cache) and the static model2vec embedder (static.py)."""
