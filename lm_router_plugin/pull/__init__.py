"""Fetch public per-sample results into the store: the Open LLM Leaderboard's details
datasets on the Hugging Face Hub (leaderboard.py) and HELM's public releases (helm.py),
through one parallel, resumable, verified downloader (download.py). docs/pull.md."""

from .common import PullResult, cache_root
from .helm import pull_helm
from .leaderboard import pull_open_llm_leaderboard

__all__ = ["PullResult", "cache_root", "pull_helm", "pull_open_llm_leaderboard"]
