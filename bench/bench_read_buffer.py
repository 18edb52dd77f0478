"""The lm-eval adapter's read buffer, A/B in one run: ``read_rows`` and the orjson floor of
bench_ingest.py on the same generated sample logs, with Python's default 8 KiB file buffer
(the adapter before) and ``lmeval.READ_BUFFER`` (64 KiB), alternating, best of --passes.

Sample lines run to kilobytes (lm-eval repeats the prompt once per choice), and iterating
such lines through an 8 KiB buffer costs several times what it does through a larger one.

    python bench/bench_read_buffer.py [--lines 400000] [--models 8] [--passes 3]

Writes the files to a temporary folder (~4.8 KB per line) and removes them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_ingest  # noqa: E402  (the generator and the floor, one definition)

from lm_router_plugin.adapters import lmeval  # noqa: E402
from lm_router_plugin.store.ingest import read_rows  # noqa: E402

BUFFERS = (("default 8 KiB", -1), ("64 KiB", lmeval.READ_BUFFER))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=400_000)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        files, size = bench_ingest.generate(root, args.lines, args.models)
        groups = bench_ingest.by_task(files)
        for _ in range(args.passes):
            for name, buffer in BUFFERS:
                # the worker processes are forked after this, so they read the same setting
                lmeval.READ_BUFFER = bench_ingest.READ_BUFFER = buffer
                start = time.perf_counter()
                table, _ = read_rows("lm-eval", [root], workers=args.workers)
                took = time.perf_counter() - start
                best[("read_rows", name)] = min(best.get(("read_rows", name), took), took)
                start = time.perf_counter()
                bench_ingest.pool_parse(groups, args.workers, "orjson")
                took = time.perf_counter() - start
                best[("floor", name)] = min(best.get(("floor", name), took), took)
    print(f"{args.lines:,} lines ({size / 1e9:.2f} GB), {len(table):,} rows, "
          f"{args.workers} processes, best of {args.passes}:")
    for (what, name), took in best.items():
        print(f"  {what:9s} {name:14s} {took:6.2f} s")
    old, new = best[("read_rows", BUFFERS[0][0])], best[("read_rows", BUFFERS[1][0])]
    print(f"  read_rows with the 64 KiB buffer: {old / new:.2f}x the speed of the default; "
          f"(b)/(a) {best[('floor', BUFFERS[0][0])] / old:.2f} -> "
          f"{best[('floor', BUFFERS[1][0])] / new:.2f}")
    print(f"reproduce: python bench/bench_read_buffer.py --lines {args.lines} --models "
          f"{args.models} --passes {args.passes} --workers {args.workers}")


if __name__ == "__main__":
    main()
