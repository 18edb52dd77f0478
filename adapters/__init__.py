"""Adapters turn harness output files into correctness-table rows.

One module per input format (``lmeval``, ``helm``, ``table``), each registered under the
entry-point group ``lm_router.adapters``. See :class:`~lm_router_plugin.adapters.base.Adapter`.
"""

from .base import Adapter, Row

__all__ = ["Adapter", "Row"]
