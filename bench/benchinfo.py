"""The two lines every benchmark prints first: the command that reproduces it and the machine.

    from benchinfo import print_header     # bench/ is on sys.path when run as a script
    print_header()                         # "# python bench/X.py ARGS" + "# machine ..."
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path


def command_line(argv: list[str] | None = None, prefix: str = "") -> str:
    """``python bench/<script>.py <args>`` as this process was started (``argv``: the
    arguments, default sys.argv[1:]); ``prefix`` e.g. "HF_HUB_OFFLINE=1 "."""
    script = Path(sys.argv[0]).name
    args = sys.argv[1:] if argv is None else argv
    return (f"{prefix}python bench/{script} " + " ".join(shlex.quote(str(a)) for a in args)
            ).strip()


def machine_line() -> str:
    """Platform, CPU counts, numpy and python versions, load average now."""
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover - every bench needs numpy
        numpy_version = "absent"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover
        load = ""
    return (f"{platform.platform()} ({platform.processor() or platform.machine()}), "
            f"os.cpu_count() {os.cpu_count()} ({usable} usable), numpy {numpy_version}, "
            f"python {platform.python_version()}{load}")


def print_header(argv: list[str] | None = None, prefix: str = "") -> None:
    """Print ``# <command>`` and ``# <machine>`` (flushed: before any long work)."""
    print(f"# {command_line(argv, prefix)}")
    print(f"# {machine_line()}", flush=True)
