"""``python -m lm_router_plugin.cli``: the lm-router command."""

from .commands import main

main()
