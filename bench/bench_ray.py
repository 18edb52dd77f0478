"""Overhead of ``--engine ray`` against the local engine, same files, same machine, same run.

For each size (synthetic lm-eval logs of bench/gen_synthetic_logs.py: M models x 20 tasks x
500 docs; 100 models = 1M rows, 1,000 models = 10M rows) three ingests into a fresh store,
each in its own process, by default in the order local, ray, ray-warm (``--order``):

- ``local``: the local engine (one worker process per usable core);
- ``ray``: ``--engine ray`` as the CLI runs it: a local Ray cluster with as many CPUs is
  started for the ingest and shut down after (start and stop are in the time);
- ``ray-warm``: the same with the cluster started before the clock starts (what a
  long-running cluster costs per ingest).

Printed per phase: wall seconds, ratio to ``local`` of the same size, the peak RSS of the
phase process (the driver: merge and store write) and the peak of the summed RSS of its
whole process tree (worker processes; for Ray also raylet, GCS and the object store's
shared pages, counted in each process that maps them), sampled every 0.2 s from /proc; and
whether the stored table is byte-for-byte the local engine's.

    python bench/bench_ray.py --models 100 --work /work/scratch/bench-ray            # 1M rows
    python bench/bench_ray.py --models 100,1000 --work /work/scratch/bench-ray       # 1M, 10M
    python bench/bench_ray.py --models 1000 --order ray-warm,ray,local --work ...    # reversed
    python bench/bench_ray.py --models 4 --tasks 3 --docs 10 --work /tmp/br          # quick

``--helm COPIES``: HELM run folders instead (the helm adapter reads one unit per run
folder): tests/data/helm/fixture-suite and ../shared/fixtures/helm_real (when present)
copied COPIES times as suites ``suite-<i>``, each copy's models renamed ``<model>-<i>`` (one
run per task and model, as a leaderboard of many models); ``--helm-repeat R``: each run's
instances R times (ids ``<id>~<j>``: runs of HELM's usual hundreds of instances, not the
fixtures' 5 to 10); phase ``local-1`` is the local engine with one process:

    python bench/bench_ray.py --helm 50 --helm-repeat 20 --order local-1,local,ray,ray-warm \
        --work /tmp/brh

Generated data goes to WORK/synth-<M>x<T>x<D> (10M rows: 9.2 GiB; reused when present) or
WORK/helm-x<COPIES>-r<R>.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = ("local", "ray", "ray-warm", "local-1")
HELM_SOURCES = (HERE.parent / "tests" / "data" / "helm" / "fixture-suite",
                HERE.parent.parent / "shared" / "fixtures" / "helm_real")


# -- memory of a process tree, from /proc ----------------------------------------------------
def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


class TreeMemory(threading.Thread):
    """Samples, every ``every`` s, the RSS of this process and the sum over its process tree;
    keeps the peaks (MiB)."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every = every
        self.peak_tree = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stop_flag.is_set():
            self.peak_tree = max(self.peak_tree, sum(_rss_kib(p) for p in _descendants(me)))
            self.stop_flag.wait(self.every)

    def stop(self) -> dict:
        self.stop_flag.set()
        self.join()
        return {"driver_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "tree_rss_mib": round(self.peak_tree / 1024)}


# -- one phase (own process) -------------------------------------------------------------
def run_phase(phase: str, data: Path, store: Path, cpus: int, adapter: str = "lm-eval"
              ) -> dict:
    import logging

    from lm_router_plugin.store.engines import RayEngine
    from lm_router_plugin.store.ingest import ingest
    from lm_router_plugin.store.store import Store

    logging.getLogger("lm_router_plugin").setLevel(logging.WARNING)  # no bars in the log
    shutil.rmtree(store, ignore_errors=True)
    paths = sorted(str(p) for p in data.iterdir() if p.is_dir())
    memory = TreeMemory()
    memory.start()
    engine = None
    if phase == "ray-warm":
        import ray

        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 logging_level="WARNING")
        engine = RayEngine()  # uses the initialised Ray as it is
    start = time.perf_counter()
    if phase in ("local", "local-1"):
        report = ingest(adapter, paths, Store(store), workers=cpus if phase == "local" else 1)
    elif phase == "ray":
        with RayEngine(num_cpus=cpus) as engine:  # start + stop inside the clock, as the CLI
            report = ingest(adapter, paths, Store(store), engine=engine)
    else:
        report = ingest(adapter, paths, Store(store), engine=engine)
    wall = time.perf_counter() - start
    if phase == "ray-warm":
        import ray

        ray.shutdown()
    usage = memory.stop()
    table = Store(store).table_path
    digest = hashlib.sha256(table.read_bytes()).hexdigest()[:16]
    return {"phase": phase, "wall_s": round(wall, 2), "rows": report.n_read,
            "table_sha256_16": digest, **usage}


def _phase_process(phase: str, data: Path, store: Path, cpus: int, timeout: float,
                   adapter: str = "lm-eval") -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--data", str(data), "--store",
           str(store), "--cpus", str(cpus), "--adapter", adapter]
    env = {**os.environ, "RAY_ADDRESS": ""}  # never a cluster from the environment here
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                         check=False)
    if out.returncode:
        raise SystemExit(f"{phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def generate(work: Path, models: int, tasks: int, docs: int) -> Path:
    data = work / f"synth-{models}x{tasks}x{docs}"
    if not (data / "truth.json").exists():
        subprocess.run([sys.executable, str(HERE / "gen_synthetic_logs.py"), str(data),
                        "--models", str(models), "--tasks", str(tasks), "--docs", str(docs),
                        "--force"], check=True)
    return data


def generate_helm(work: Path, copies: int, repeat: int = 1) -> Path:
    """WORK/helm-x<copies>-r<repeat>/suite-<i>/<run>/: the HELM_SOURCES run folders, their
    run_spec's model renamed <model>-<i> in copy i (so no task and model is in two run
    folders), each instance ``repeat`` times (ids <id>~<j>)."""
    data = work / f"helm-x{copies}-r{repeat}"
    if (data / "done").exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    runs = [r for source in HELM_SOURCES if source.is_dir() for r in sorted(source.iterdir())
            if (r / "run_spec.json").is_file()]
    for i in range(copies):
        for run in runs:
            dest = data / f"suite-{i:03d}" / run.name
            shutil.copytree(run, dest)
            spec = json.loads((run / "run_spec.json").read_text())
            spec["adapter_spec"]["model"] = f"{spec['adapter_spec']['model']}-{i:03d}"
            (dest / "run_spec.json").write_text(json.dumps(spec))
            if repeat > 1:
                state = json.loads((run / "scenario_state.json").read_text())
                state["request_states"] = [
                    {**rs, "instance": {**rs["instance"], "id": f"{rs['instance']['id']}~{j}"}}
                    for j in range(repeat) for rs in state["request_states"]]
                (dest / "scenario_state.json").write_text(json.dumps(state))
                stats = json.loads((run / "per_instance_stats.json").read_text())
                stats = [{**e, "instance_id": f"{e['instance_id']}~{j}"}
                         for j in range(repeat) for e in stats]
                (dest / "per_instance_stats.json").write_text(json.dumps(stats))
    (data / "done").write_text(f"{copies} copies of {len(runs)} runs, x{repeat}\n")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--adapter", default="lm-eval", help=argparse.SUPPRESS)
    ap.add_argument("--helm", type=int, default=0, metavar="COPIES",
                    help="HELM run folders (the fixtures COPIES times) instead of lm-eval logs")
    ap.add_argument("--helm-repeat", type=int, default=1, metavar="R",
                    help="with --helm: each run's instances R times")
    ap.add_argument("--models", default="100", help="comma-separated model counts (100: 1M rows)")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)),
                    help="worker processes (local) and Ray CPUs (default: the usable cores)")
    ap.add_argument("--work", default="/work/scratch/bench-ray")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per phase")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    ap.add_argument("--order", default="local,ray,ray-warm",
                    help="the phases in the order they run, comma-separated, from "
                         f"{', '.join(PHASES)}; must include local (the ratios are to it)")
    args = ap.parse_args(argv)
    order = [p.strip() for p in args.order.split(",") if p.strip()]
    unknown = [p for p in order if p not in PHASES]
    if unknown or "local" not in order or len(set(order)) != len(order):
        ap.error(f"--order {args.order!r}: give distinct phases from {', '.join(PHASES)}, "
                 "local among them (the ratios are to local)"
                 + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    if args.phase:
        print(json.dumps(run_phase(args.phase, Path(args.data), Path(args.store), args.cpus,
                                   args.adapter)))
        return 0
    sys.path.insert(0, str(HERE))
    from benchinfo import print_header

    print_header(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.cpus} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    print("| rows | engine | wall s | x local | driver peak RSS MiB | tree peak RSS MiB | "
          "same table as local |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)
    results = []
    adapter = "helm" if args.helm else "lm-eval"
    for models in (int(m) for m in args.models.split(",")) if not args.helm else [args.helm]:
        data = (generate_helm(work, args.helm, args.helm_repeat) if args.helm
                else generate(work, models, args.tasks, args.docs))
        done = {}
        for phase in order:
            done[phase] = _phase_process(phase, data, work / f"store-{phase}", args.cpus,
                                         args.timeout, adapter)
            done[phase]["load_end"] = round(os.getloadavg()[0], 1)
        base = done["local"]
        for phase, r in done.items():
            r["ratio"] = round(r["wall_s"] / base["wall_s"], 2)
            r["same"] = r["table_sha256_16"] == base["table_sha256_16"]
            results.append({"models": models, **r})
            print(f"| {r['rows']:,} | {phase} | {r['wall_s']:.1f} | {r['ratio']:.2f} | "
                  f"{r['driver_rss_mib']:,} | {r['tree_rss_mib']:,} | "
                  f"{'yes' if r['same'] else 'NO'} |", flush=True)
        if not args.keep:
            for phase in PHASES:
                shutil.rmtree(work / f"store-{phase}", ignore_errors=True)
    raw = work / (f"bench_ray-helm{args.helm}r{args.helm_repeat}-{args.order}.json" if args.helm
                  else f"bench_ray-{args.models}-{args.order}.json")
    raw.write_text(json.dumps(results, indent=2))
    print(f"# load average {os.getloadavg()[0]:.1f} at end; raw: {raw}")
    return 0 if all(r["same"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
