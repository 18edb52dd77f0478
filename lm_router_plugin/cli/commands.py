"""The ``lm-router`` command line: a shell over the library (api.py) and the printer
(display.py). It parses options, calls one library function and prints what it returns.

Results go to stdout (a table, or JSON with --json); logs and progress go to stderr.
Exit codes: 0 success, 1 a data error (one message naming the file, line or key, no
traceback), 2 bad usage (click's own, and errors.UsageError: an unknown adapter, predictor,
decider or model name, an out-of-range setting, a bad --config file).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from ..errors import LMRouterError, UsageError
from . import display

logger = logging.getLogger(__name__)

STORE_HELP = "Store folder (default: $LM_ROUTER_STORE or ./lm-router-store)."


def _set_quiet(quiet: bool) -> None:
    """-q: only warnings and errors on stderr, and no progress bars (progress.py reads the
    package logger's level)."""
    if quiet:
        logging.getLogger("lm_router_plugin").setLevel(logging.WARNING)


def _quiet_callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    _set_quiet(value)
    return value


_QUIET = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                      callback=_quiet_callback,
                      help="Only print warnings and errors on stderr; no progress bars.")


def _user_errors(fn: Callable) -> Callable:
    """Library errors as one message: exit 2 for a UsageError, 1 for any other."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from exc
        except LMRouterError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


class _Group(click.Group):
    """The top-level group: a closed stdout (``lm-router info | head -1``) ends the command
    quietly with exit code 0, as for cat or grep, instead of click's exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a broken pipe shows here for buffered output
            return result
        except BrokenPipeError:
            try:  # nothing more can be written; keep the interpreter's final flush quiet
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):  # no real file (CliRunner)
                pass
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lm-router-plugin")
@click.option("-q", "--quiet", is_flag=True,
              help="Only print warnings and errors on stderr; no progress bars (also "
                   "accepted after the command).")
def main(quiet: bool) -> None:
    """Learn from per-sample benchmark results which LLM to use for a new task.

    \b
    lm-router ingest lm-eval runs/
    lm-router info
    lm-router recommend --task my_task --include-path task_configs/
    lm-router plan-labels --task my_task --include-path task_configs/ --n 10
    lm-router recommend --task my_task --include-path task_configs/ --labeled my_task-runs
    lm-router route --prompts prompts.txt
    lm-router evaluate
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lm_router_plugin")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


# -- shared options ----------------------------------------------------------------------
def _options(*options: Callable) -> Callable:
    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..embedding.embedders import parse_devices

    try:
        parse_devices(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


_STORE = click.option("--store", "store_dir", type=click.Path(file_okay=False),
                      envvar="LM_ROUTER_STORE", default=None, help=STORE_HELP)
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
_TARGET = click.option("--target", type=click.Choice(["correct", "score"]), default=None,
                       help="What the router learns: correct (0/1, the thresholds'; default) "
                            "or score (the raw metric values, normalised per metric; "
                            "docs/raw-metrics.md).")
_CANDIDATES = [
    click.option("--candidates", default=None, help="Comma-separated models to choose among."),
    click.option("--max-params", default=None,
                 help="Only models with at most this many parameters (e.g. 13B)."),
]
_ROUTER = [
    click.option("--embedder", default=None, envvar="LM_ROUTER_EMBEDDER",
                 help="sentence-transformers name or folder (default all-MiniLM-L6-v2, "
                      "packaged), or 'static' (a model2vec embedder distilled from it; needs "
                      "lm-router-plugin[static])."),
    click.option("--device", default=None, envvar="LM_ROUTER_DEVICE", callback=_check_device,
                 help="Where the embedder runs: cpu, cuda, cuda:1; several, comma-separated, "
                      "run one process per device."),
    click.option("--predictor", default=None,
                 help="Registered correctness predictor (default knn; entry point "
                      "lm_router.predictors)."),
    click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
                 default=None,
                 help="YAML of the research settings (kappa, sigma, t, eta, seed, k, index, "
                      "predictor params, max_seq_length; docs/configuration.md)."),
]
_NEW_TASK = [
    click.option("--task", default=None, help="lm-eval task (or group/tag) name."),
    click.option("--include-path", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Folder of extra lm-eval task YAMLs (as lm_eval --include_path)."),
    click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, exists=True),
                 default=None,
                 help="Prompts of the new task: text (one prompt per line) or JSONL "
                      "({\"prompt\": ...} per line; prompts may span lines)."),
    click.option("--limit", type=click.IntRange(min=1), default=None,
                 help="Use only the first N docs of --task."),
]


_ENGINE = [
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                 show_default=True,
                 help="Where the work runs: local (this machine's processes) or ray (a Ray "
                      "cluster; needs lm-router-plugin[ray]). The store is written here "
                      "either way (docs/scaling.md, Ray engine)."),
    click.option("--ray-address", default=None, metavar="HOST:PORT",
                 help="Ray cluster for --engine ray (default: $RAY_ADDRESS, else a local "
                      "cluster started for this command)."),
]


def _comma_list(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _settings(config: str | None, **overrides: Any) -> Any:
    """The settings of --config with the command-line options that were given on top."""
    from ..settings import load_settings

    return load_settings(config).override(**overrides)


def _one_task(task: str | None, prompts_file: str | None, limit: int | None) -> None:
    if (task is None) == (prompts_file is None):
        raise click.UsageError("give exactly one of --task NAME or --prompts FILE")
    if limit is not None and task is None:
        raise click.UsageError("--limit applies to --task only")


# -- commands ----------------------------------------------------------------------------
@main.command()
@click.argument("adapter")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_STORE
@click.option("--thresholds", type=click.Path(dir_okay=False),
              help="YAML of eta per metric / per task (overrides the shipped defaults).")
@click.option("--models", "models_file", type=click.Path(dir_okay=False),
              help="YAML of model metadata: {model: {params: 7B, cost_per_1m: 0.2}}.")
@click.option("--replace", is_flag=True,
              help="Let the new files win where they conflict with stored rows.")
@click.option("-o", "--option", "adapter_options", multiple=True, metavar="KEY=VALUE",
              help="Adapter setting, repeatable; helm: include_perturbed=true|false, "
                   "train_trials=mean|first, split=main|all|NAME (main: the test split if the "
                   "run has one, else all its splits; all: every split; NAME: that split). "
                   "lm-eval: tasks=a,b (only these tasks' files of an hf://datasets/ORG/NAME[@rev] "
                   "download); table takes none.")
@_options(*_ENGINE)
@_QUIET
@_user_errors
def ingest(adapter: str, paths: tuple[str, ...], store_dir: str | None, thresholds: str | None,
           models_file: str | None, replace: bool, adapter_options: tuple[str, ...],
           engine: str, ray_address: str | None) -> None:
    """Read harness outputs into the store's correctness table.

    ADAPTER is lm-eval, helm, eee or table (or a plugin's name).

    \b
    lm-router ingest lm-eval runs/
    lm-router ingest lm-eval hf://datasets/ORG/NAME@REVISION -o tasks=gsm8k
    lm-router ingest helm benchmark_output/runs/v1/
    lm-router ingest table results.parquet
    lm-router ingest lm-eval runs/ --engine ray --ray-address HEAD:6379
    """
    import contextlib

    import yaml

    from ..registry import adapters
    from ..store.engines import make_engine
    from ..store.ingest import ingest as run_ingest
    from ..store.store import Store

    try:
        adapters.get(adapter)  # a typo is bad usage (exit 2), before any reading
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="ADAPTER") from exc
    options: dict[str, Any] = {}
    for item in adapter_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        options[key.strip()] = yaml.safe_load(value)  # "true" -> True, "3" -> 3
    store = Store(store_dir)
    runner = make_engine(engine, ray_address)  # ray missing: one error, before any reading
    try:
        # the cluster answers (or the local one is up) before any file is read
        with runner if runner is not None else contextlib.nullcontext():
            report = run_ingest(adapter, paths, store, thresholds=thresholds,
                                models_file=models_file, replace=replace, engine=runner,
                                **options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, LMRouterError) or not options:
            raise
        raise click.BadParameter(str(exc), param_hint="--option") from exc
    click.echo(f"{report.n_read} rows read: {report.n_added} added, {report.n_unchanged} already "
               f"stored, {report.n_replaced} replaced; {len(report.models)} models, "
               f"{len(report.tasks)} tasks -> {store.root}")


@main.group(context_settings={"help_option_names": ["-h", "--help"]})
def pull() -> None:
    """Download public per-sample results and ingest them (docs/pull.md).

    \b
    lm-router pull open-llm-leaderboard --models Qwen/Qwen2.5-7B-Instruct \\
        --tasks 'leaderboard_bbh_*'
    lm-router pull helm --suite lite --release v1.9.0 --runs 'mmlu:*'
    """


_PULL = [
    click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Parallel downloads."),
    click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                 help="Download cache (default: $LM_ROUTER_CACHE_DIR/pull, else "
                      "$XDG_CACHE_HOME/lm-router/pull, else ~/.cache/lm-router/pull); a "
                      "second run fetches only what is missing."),
    _STORE,
    click.option("--thresholds", type=click.Path(dir_okay=False),
                 help="YAML of eta per metric / per task (as for ingest)."),
    click.option("--replace", is_flag=True,
                 help="Let the pulled rows win where they conflict with stored rows."),
]


@pull.command("open-llm-leaderboard")
@click.option("--models", required=True, help="Comma-separated Hub model ids ORG/NAME.")
@click.option("--tasks", default=None,
              help="Comma-separated task names or patterns as in the details files, e.g. "
                   "leaderboard_mmlu_pro,'leaderboard_bbh_*' (default: all).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl",
              show_default=True,
              help="jsonl: the sample logs lm-eval wrote (main); parquet: the Hub's Parquet "
                   "conversion (refs/convert/parquet, smaller, no task configs).")
@click.option("--endpoint", envvar="HF_ENDPOINT", default=None,
              help="Hub URL (default: $HF_ENDPOINT, else https://huggingface.co).")
@_options(*_PULL)
@_QUIET
@_user_errors
def pull_leaderboard(models: str, tasks: str | None, fmt: str, endpoint: str | None,
                     jobs: int, cache_dir: str | None, store_dir: str | None,
                     thresholds: str | None, replace: bool) -> None:
    """The Open LLM Leaderboard's details datasets (open-llm-leaderboard/ORG__NAME-details):
    the newest run of each task.

    \b
    lm-router pull open-llm-leaderboard --models ORG/A,ORG/B --tasks leaderboard_mmlu_pro
    """
    from ..pull import pull_open_llm_leaderboard
    from ..store.store import Store

    result = pull_open_llm_leaderboard(_comma_list(models) or [], _comma_list(tasks),
                                       store=Store(store_dir), fmt=fmt, jobs=jobs,
                                       cache_dir=cache_dir, endpoint=endpoint,
                                       thresholds=thresholds, replace=replace)
    display.print_pull(result)


@pull.command("helm")
@click.option("--suite", required=True,
              help="HELM project: lite, classic, mmlu, safety, air-bench, ...")
@click.option("--release", required=True, help="Its release, e.g. v1.9.0.")
@click.option("--runs", "runs", multiple=True,
              help="Run name or pattern (fnmatch, e.g. 'mmlu:*model=openai_gpt2*'), "
                   "repeatable (default: every run of the release).")
@click.option("--base-url", envvar="LM_ROUTER_HELM_URL", default=None,
              help="Bucket URL (default: $LM_ROUTER_HELM_URL, else "
                   "https://storage.googleapis.com/crfm-helm-public).")
@_options(*_PULL)
@_QUIET
@_user_errors
def pull_helm(suite: str, release: str, runs: tuple[str, ...], base_url: str | None,
              jobs: int, cache_dir: str | None, store_dir: str | None,
              thresholds: str | None, replace: bool) -> None:
    """A public HELM release: per run, the run_spec, scenario_state and per_instance_stats
    files its web front end reads.

    \b
    lm-router pull helm --suite lite --release v1.9.0 --runs 'gsm:*'
    """
    from ..pull import pull_helm as run_pull
    from ..store.store import Store

    result = run_pull(suite, release, list(runs) or None, store=Store(store_dir), jobs=jobs,
                      cache_dir=cache_dir, base_url=base_url, thresholds=thresholds,
                      replace=replace)
    display.print_pull(result)


@main.command()
@_STORE
@_options(*_ROUTER[:2])
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              default=None,
              help="YAML of settings (its embedder section: name, max_seq_length; as for "
                   "recommend, so that it finds the vectors).")
@_options(*_ENGINE)
@_JSON
@_QUIET
@_user_errors
def embed(store_dir: str | None, embedder: str | None, device: str | None,
          config: str | None, engine: str, ray_address: str | None, as_json: bool) -> None:
    """Embed the store's reference texts into its embedding cache, ahead of recommend,
    route and evaluate (which otherwise embed them on their first fit).

    \b
    lm-router embed
    lm-router embed --embedder static
    lm-router embed --engine ray --ray-address HEAD:6379
    """
    from .. import api

    result = api.embed(store_dir, settings=_settings(config, embedder=embedder, device=device),
                       engine=engine, ray_address=ray_address)
    if as_json:
        display.echo_json(result)
        return
    display.print_embed(result)


@main.command()
@_STORE
@_JSON
@_QUIET
@_user_errors
def info(store_dir: str | None, as_json: bool) -> None:
    """Models, tasks, counts and per-task accuracies of the stored table.

    Per (model, task): the metric, its threshold eta, the harness's mean score and acc, the
    share of rows counted correct (score > eta, or < eta where lower is better; a binary
    metric is correct when 1). acc differs from the harness's mean for continuous or judged
    metrics (e.g. a judge score of 0.75 counts 1 at eta 0.5).

    \b
    lm-router info --json
    """
    from .. import api

    data = api.info(store_dir)
    if as_json:
        data.pop("summary")
        data.pop("store")
        display.echo_json(data)
        return
    display.print_info(data)


@main.command()
@_options(*_NEW_TASK)
@click.option("--labeled", "labeled", multiple=True, type=click.Path(exists=True),
              help="lm-eval sample logs of some of the task's docs (e.g. plan-labels' runs "
                   "folder), repeatable.")
@click.option("--plan", "plan", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PREFIX.plan.json of plan-labels: checked against the task and reported "
                   "on (which planned docs have labels).")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None,
              help="Thresholds YAML for --labeled rows (default: the eta the store's rows "
                   "were labelled with).")
@click.option("--score", default="stack", show_default=True,
              help="The decision: stack (the switch learned leave-one-task-out on the "
                   "reference tasks; labels update it), s3 (the paper's, with fallback to "
                   "the best model on average), s2, s1, or a plugin's decider.")
@_TARGET
@_options(*_CANDIDATES, *_ROUTER)
@_STORE
@_JSON
@_QUIET
@_user_errors
def recommend(task: str | None, include_path: str | None, prompts_file: str | None,
              limit: int | None, labeled: tuple[str, ...], plan: str | None,
              thresholds: str | None,
              score: str, target: str | None, candidates: str | None, max_params: str | None,
              embedder: str | None, device: str | None, predictor: str | None,
              config: str | None, store_dir: str | None, as_json: bool) -> None:
    """Which model to use for a new task, and how sure we are.

    \b
    lm-router recommend --task my_task --include-path task_configs/
    lm-router recommend --prompts prompts.txt --max-params 13B --json
    lm-router recommend --task my_task --include-path task_configs/ --labeled my_task-runs \\
        --plan my_task.plan.json
    """
    from .. import api

    _one_task(task, prompts_file, limit)
    rec = api.recommend(store_dir, task=task, include_path=include_path,
                        prompts_file=prompts_file, limit=limit, labeled=labeled, plan=plan,
                        thresholds=thresholds, score=score,
                        candidates=_comma_list(candidates), max_params=max_params,
                        settings=_settings(config, embedder=embedder, device=device,
                                           predictor=predictor), target=target)
    if as_json:
        display.echo_json(rec.to_dict())
        return
    display.print_recommendation(rec)


@main.command("plan-labels")
@_options(*_NEW_TASK)
@click.option("--n", "n", type=click.IntRange(min=1), required=True,
              help="How many more docs to label (each candidate runs them).")
@click.option("--labeled", "labeled", multiple=True, type=click.Path(exists=True),
              help="lm-eval sample logs of docs labelled so far (excluded), repeatable.")
@click.option("--plan", "plan", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The previous PREFIX.plan.json: its docs are excluded and the new round "
                   "is appended to it.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="PREFIX of PREFIX.samples.json / PREFIX.plan.json (default: the --plan's, "
                   "else the task name).")
@_options(*_CANDIDATES)
@_TARGET
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True),
              default=None, help="YAML of settings (its decision.seed seeds the draw).")
@_STORE
@_JSON
@_QUIET
@_user_errors
def plan_labels(task: str | None, include_path: str | None, prompts_file: str | None,
                limit: int | None, n: int, labeled: tuple[str, ...], plan: str | None,
                out: str | None, candidates: str | None, max_params: str | None,
                target: str | None, config: str | None, store_dir: str | None,
                as_json: bool) -> None:
    """Which docs of a new task to label: a seeded random sample, stratified over its
    subtasks, written as lm-eval's --samples file.

    Writes PREFIX.samples.json and PREFIX.plan.json and prints the lm_eval command for each
    candidate, then the recommend line to run once the labels are in.

    \b
    lm-router plan-labels --task my_task --include-path task_configs/ --n 10
    lm-router plan-labels --task my_task --include-path task_configs/ --n 10 \\
        --labeled my_task-runs --plan my_task.plan.json
    """
    from .. import api

    _one_task(task, prompts_file, limit)
    # settings as the --config path: the printed next lines carry it
    result = api.plan_labels(store_dir, n=n, task=task, include_path=include_path,
                             limit=limit, prompts_file=prompts_file, labeled=labeled,
                             plan=plan, out=out, candidates=_comma_list(candidates),
                             max_params=max_params, settings=config, target=target)
    if as_json:  # next_command / more_command: the then: / more: lines printed below
        display.echo_json(result.to_dict())
        return
    display.print_plan(result, {"then": result.next_command, "more": result.more_command})


@main.command()
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, exists=True),
              required=True,
              help="Text (one prompt per line) or JSONL ({\"prompt\": ...} per line).")
@_TARGET
@_options(*_CANDIDATES, *_ROUTER)
@_STORE
@click.option("--json", "as_json", is_flag=True,
              help="JSONL with g per model (default: index and chosen model per line); "
                   "--target score: the predicted metric value, and its units.")
@_QUIET
@_user_errors
def route(prompts_file: str, target: str | None, candidates: str | None,
          max_params: str | None, embedder: str | None, device: str | None,
          predictor: str | None, config: str | None, store_dir: str | None,
          as_json: bool) -> None:
    """Per-prompt routing: the model most likely to answer each prompt correctly.

    \b
    lm-router route --prompts prompts.txt
    lm-router route --prompts prompts.jsonl --max-params 13B --json > routes.jsonl
    """
    from .. import api

    decisions = api.route(store_dir, prompts_file=prompts_file,
                          candidates=_comma_list(candidates), max_params=max_params,
                          settings=_settings(config, embedder=embedder, device=device,
                                             predictor=predictor), target=target)
    display.print_routes(decisions, as_json)


def _numbers(value: str, option: str, kind: type = float) -> list:
    try:
        return [kind(a) for a in value.split(",") if a.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of numbers: {value!r}", param_hint=option) from exc


@main.command()
@_STORE
@click.option("--tasks-by", default="task", show_default=True,
              help="Column that defines the tasks: task, benchmark, or a column of --tasks-file.")
@click.option("--tasks-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Side table (CSV/TSV/Parquet, may be .gz) with instance_id [, task] and the "
                   "--tasks-by column.")
@click.option("--alpha", "alphas", default="0", show_default=True,
              help="Comma-separated fractions of in-task labels, e.g. 0,0.05,0.1 "
                   "(min(alpha n, 50) labels per task).")
@click.option("--labels", "label_counts", default="", show_default=False,
              help="Comma-separated numbers of in-task labels per task, e.g. 5,10,20,30.")
@click.option("--repeats", default=10, show_default=True, type=int,
              help="Seeded repetitions per alpha / label count.")
@click.option("--compare-to", default=None, help="Model to report beside the routed choice.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write PNG figures into this folder (needs matplotlib).")
@_TARGET
@_options(*_CANDIDATES, *_ROUTER)
@_JSON
@_QUIET
@_user_errors
def evaluate(store_dir: str | None, tasks_by: str, tasks_file: str | None, alphas: str,
             label_counts: str, repeats: int, compare_to: str | None, plot_dir: str | None,
             target: str | None, candidates: str | None, max_params: str | None,
             embedder: str | None, device: str | None, predictor: str | None,
             config: str | None, as_json: bool) -> None:
    """How well each decision works on your benchmark data (strict leave one task out).

    \b
    lm-router evaluate
    lm-router evaluate --alpha 0,0.05,0.1 --labels 10,20 --repeats 10 --plot figures/
    lm-router evaluate --max-params 13B --compare-to llama-2-70b
    """
    from pathlib import Path

    from .. import api

    if plot_dir:  # an unusable folder or no matplotlib: fail now, not after the evaluation
        from ..evaluation.plots import prepare

        prepare(Path(plot_dir))
    result = api.evaluate(store_dir, tasks_by=tasks_by, tasks_file=tasks_file,
                          alphas=_numbers(alphas, "--alpha") or [0.0],
                          label_counts=_numbers(label_counts, "--labels", int),
                          repeats=repeats, candidates=_comma_list(candidates),
                          max_params=max_params, compare_to=compare_to,
                          settings=_settings(config, embedder=embedder, device=device,
                                             predictor=predictor), target=target)
    if plot_dir:
        from ..evaluation.plots import write_plots

        for path in write_plots(result, Path(plot_dir)):
            logger.info("wrote %s", path)  # a progress line: -q silences it
    if as_json:
        display.echo_json(result.to_dict())
        return
    display.print_evaluation(result)


if __name__ == "__main__":  # pragma: no cover
    main()
