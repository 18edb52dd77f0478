"""The ``lm-router`` command line: a thin layer over the library.

Results go to stdout (a table, or JSON with --json); logs and progress go to stderr.
Exit codes: 0 success, 1 a user-facing error (one message, no traceback), 2 bad usage.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .errors import LMRouterError

STORE_HELP = "Store folder (default: $LM_ROUTER_STORE or ./lm-router-store)."


def _store_option(fn: Callable) -> Callable:
    return click.option("--store", "store_dir", type=click.Path(file_okay=False),
                        envvar="LM_ROUTER_STORE", default=None, help=STORE_HELP)(fn)


def _user_errors(fn: Callable) -> Callable:
    """Turn library errors into one clear message and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LMRouterError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lm-router-plugin")
@click.option("-q", "--quiet", is_flag=True, help="Only print warnings and errors on stderr.")
def main(quiet: bool) -> None:
    """Learn from per-sample benchmark results which LLM to use for a new task.

    \b
    lm-router ingest lm-eval runs/
    lm-router info
    lm-router recommend --task my_task --include-path task_configs/
    lm-router evaluate
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lm_router_plugin")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


@main.command()
@click.argument("adapter")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_store_option
@click.option("--thresholds", type=click.Path(dir_okay=False),
              help="YAML of eta per metric / per task (overrides the shipped defaults).")
@click.option("--models", "models_file", type=click.Path(dir_okay=False),
              help="YAML of model metadata: {model: {params: 7B, cost_per_1m: 0.2}}.")
@click.option("--replace", is_flag=True,
              help="Let the new files win where they conflict with stored rows.")
@click.option("-o", "--option", "adapter_options", multiple=True, metavar="KEY=VALUE",
              help="Adapter setting, repeatable; helm: include_perturbed=true, "
                   "train_trials=mean|first, split=main|all|NAME.")
@_user_errors
def ingest(adapter: str, paths: tuple[str, ...], store_dir: str | None, thresholds: str | None,
           models_file: str | None, replace: bool, adapter_options: tuple[str, ...]) -> None:
    """Read harness outputs into the store's correctness table.

    ADAPTER is lm-eval, helm or table (or a plugin's name).

    \b
    lm-router ingest lm-eval runs/
    lm-router ingest helm benchmark_output/runs/v1/
    lm-router ingest table results.parquet
    """
    from .ingest import ingest as run_ingest
    from .store import Store

    import yaml

    options: dict[str, Any] = {}
    for item in adapter_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        options[key.strip()] = yaml.safe_load(value)  # "true" -> True, "3" -> 3
    store = Store(store_dir)
    try:
        report = run_ingest(adapter, paths, store, thresholds=thresholds,
                            models_file=models_file, replace=replace, **options)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, LMRouterError) or not options:
            raise
        raise click.BadParameter(str(exc), param_hint="--option") from exc
    click.echo(f"{report.n_read} rows read: {report.n_added} added, {report.n_unchanged} already "
               f"stored, {report.n_replaced} replaced; {len(report.models)} models, "
               f"{len(report.tasks)} tasks -> {store.table_path}")


@main.command()
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def info(store_dir: str | None, as_json: bool) -> None:
    """Models, tasks, counts and per-task accuracies of the stored table.

    \b
    lm-router info --json
    """
    from .ingest import accuracy_table
    from .store import Store

    store = Store(store_dir)
    table = store.read_table(required=True)
    accuracy, counts = accuracy_table(table)
    models = sorted(table["model"].unique())
    tasks = sorted(table["task"].unique())
    if as_json:
        _echo_json({"n_rows": len(table), "models": models, "tasks": tasks,
                    "accuracy": accuracy, "counts": counts, "model_metadata": store.read_models()})
        return
    click.echo(f"{len(table)} rows, {len(models)} models, {len(tasks)} tasks ({store.root})")
    name_width = max(len(t) for t in tasks)
    for model in models:
        click.echo(f"\n{model}")
        for task in tasks:
            if model in accuracy[task]:
                click.echo(f"  {task:<{name_width}}  acc {accuracy[task][model]:.4f}  "
                           f"n {counts[task][model]}")


def _format_params(params: int | None) -> str:
    if params is None:
        return "-"
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .embedding import parse_devices

    try:
        parse_devices(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _router_options(fn: Callable) -> Callable:
    options = [
        click.option("--embedder", default=None, envvar="LM_ROUTER_EMBEDDER",
                     help="sentence-transformers name or local folder (default "
                          "all-MiniLM-L6-v2, packaged copy), or 'static' for a model2vec "
                          "static embedder distilled from it on first use (needs "
                          "lm-router-plugin[static]); 'static:NAME_OR_FOLDER' distils another."),
        click.option("--device", default=None, envvar="LM_ROUTER_DEVICE",
                     callback=_check_device,
                     help="Where the embedder runs: cpu, cuda, cuda:1, ... Several, "
                          "comma-separated (cuda:0,cuda:1), run sentence-transformers' "
                          "multi-process pool, one process per device."),
        click.option("--max-seq-length", type=int, default=None,
                     help="Truncate prompts to this many tokens before embedding "
                          "(default: the embedder's limit)."),
        click.option("--candidates", default=None,
                     help="Comma-separated models to choose among."),
        click.option("--max-params", default=None,
                     help="Only models with at most this many parameters (e.g. 13B)."),
        click.option("--k", "k", default=5, show_default=True, type=int,
                     help="Neighbours of the kNN correctness predictor."),
        click.option("--kappa", default=19, show_default=True, type=int,
                     help="Neighbours for the task distance u."),
        click.option("--sigma", default=0.09, show_default=True, type=float,
                     help="Kernel bandwidth of the confidence model p."),
        click.option("--t", "t", default=0.5, show_default=True, type=float,
                     help="Threshold on g for S2/S3."),
        click.option("--eta", default=0.6, show_default=True, type=float,
                     help="Required P(choice beats the best model on average)."),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="Seed of the Monte Carlo fallback test."),
        click.option("--predictor", default="knn", show_default=True,
                     help="Registered correctness predictor."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _router_setup(store_dir: str | None, embedder: str | None, max_seq_length: int | None,
                  device: str | None, candidates: str | None, max_params: str | None,
                  k: int, kappa: int, sigma: float, t: float, eta: float, seed: int,
                  predictor: str) -> tuple[Any, Any, dict]:
    """(store, fitted router, restriction kwargs) shared by recommend and route."""
    from .router import fit_or_load
    from .store import Store, parse_params

    store = Store(store_dir)
    router = fit_or_load(store, k=k, kappa=kappa, sigma=sigma, t=t, eta=eta, seed=seed,
                         predictor=predictor, embedder=embedder, max_seq_length=max_seq_length,
                         device=device)
    try:
        limit = parse_params(max_params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-params") from exc
    restrict = {"candidates": [c.strip() for c in candidates.split(",") if c.strip()]
                if candidates else None, "max_params": limit,
                "model_info": store.read_models()}
    return store, router, restrict


@main.command()
@click.option("--task", default=None, help="lm-eval task (or group/tag) name.")
@click.option("--include-path", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of extra lm-eval task YAMLs (as lm_eval --include_path).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None,
              help="Prompts of the new task: text (one per line) or JSONL with 'prompt'.")
@click.option("--limit", type=int, default=None, help="Use only the first N docs of --task.")
@click.option("--labeled", "labeled", multiple=True, type=click.Path(exists=True),
              help="lm-eval sample logs of the new task (few in-task labels), repeatable.")
@click.option("--score", type=click.Choice(["s1", "s2", "s3"]), default="s3", show_default=True,
              help="Score that picks the model (s3: with fallback to the best on average).")
@_router_options
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def recommend(task: str | None, include_path: str | None, prompts_file: str | None,
              limit: int | None, labeled: tuple[str, ...], score: str, store_dir: str | None,
              as_json: bool, **router_args: Any) -> None:
    """Which model to use for a new task, and how sure we are.

    \b
    lm-router recommend --task my_task --include-path task_configs/
    lm-router recommend --prompts prompts.txt --max-params 13B --json
    """
    from .tasks import read_prompts_file, task_prompts

    if (task is None) == (prompts_file is None):
        raise click.UsageError("give exactly one of --task NAME or --prompts FILE")
    # Inputs first: a bad prompts file or task name is reported before any (slow) fitting.
    if task is not None:
        prompts = task_prompts(task, include_path, limit=limit)
    else:
        prompts = read_prompts_file(prompts_file)
    labeled_rows = None
    if labeled:
        from .ingest import read_rows

        labeled_rows, _ = read_rows("lm-eval", labeled)
    store, router, restrict = _router_setup(store_dir, **router_args)
    rec = router.recommend(prompts, task=task or str(prompts_file), score=score,
                           labeled=labeled_rows, store=store, **restrict)
    if as_json:
        _echo_json(rec.to_dict())
        return
    _print_recommendation(rec)


def _print_recommendation(rec: Any) -> None:
    click.echo(f"task {rec.task}: {rec.n_inputs} inputs, distance to the reference tasks "
               f"u = {rec.u:.3f}")
    header = f"{'model':<36} {'S1':>6} {'S2':>6} {'S3':>6} {'p':>6} {'params':>7}"
    click.echo(header)
    click.echo("-" * len(header))
    for row in rec.models:
        mark = "  <- choice" if row.model == rec.choice else (
            "  (best on average)" if row.model == rec.bma else "")
        click.echo(f"{row.model:<36} {row.s1:6.3f} {row.s2:6.3f} {row.s3:6.3f} {row.p:6.3f} "
                   f"{_format_params(row.params):>7}{mark}")
    click.echo(f"\nchoice: {rec.choice}" + (" (fell back to the best model on average)"
                                           if rec.fallback else ""))
    click.echo(f"why: {rec.reason}")
    low, high = rec.u_reference_range
    if not low <= rec.u <= high:
        click.echo(f"note: u = {rec.u:.3f} is outside the reference tasks' range "
                   f"[{low:.3f}, {high:.3f}]; p (and S3) are extrapolated and less reliable")
    if rec.nearest_tasks:
        near = ", ".join(f"{n['task']} ({n['share']:.0%})" for n in rec.nearest_tasks)
        click.echo(f"nearest reference tasks: {near}")


@main.command()
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), required=True,
              help="Text (one prompt per line) or JSONL with 'prompt'.")
@_router_options
@_store_option
@click.option("--json", "as_json", is_flag=True,
              help="JSONL with g per model (default: index and chosen model per line).")
@_user_errors
def route(prompts_file: str, store_dir: str | None, as_json: bool, **router_args: Any) -> None:
    """Per-prompt routing: the model most likely to answer each prompt correctly.

    \b
    lm-router route --prompts prompts.jsonl --json > routes.jsonl
    """
    from .tasks import read_prompts_file

    prompts = read_prompts_file(prompts_file)
    store, router, restrict = _router_setup(store_dir, **router_args)
    decisions = router.route(prompts, store=store, **restrict)
    for d in decisions:
        if as_json:
            click.echo(json.dumps({"index": d.index, "model": d.model, "g": d.g}))
        else:
            click.echo(f"{d.index}\t{d.model}")


@main.command()
@_store_option
@click.option("--tasks-by", default="task", show_default=True,
              help="Column that defines the tasks: task, benchmark, or a column of --tasks-file.")
@click.option("--tasks-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Side table (CSV/TSV/Parquet, may be .gz) with instance_id [, task] and the "
                   "--tasks-by column, e.g. MMLU-Pro's instances.tsv.gz with 'src'.")
@click.option("--alpha", "alphas", default="0", show_default=True,
              help="Comma-separated fractions of in-task labels, e.g. 0,0.02,0.05,0.1,0.2,0.3.")
@click.option("--repeats", default=10, show_default=True, type=int,
              help="Seeded repetitions per alpha > 0.")
@click.option("--label-selection", type=click.Choice(["random", "diverse"]), default="random",
              show_default=True, help="How in-task labels are picked (random: the paper).")
@click.option("--compare-to", default=None, help="Model to report beside the routed choice.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write PNG figures into this folder (needs matplotlib).")
@_router_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def evaluate(store_dir: str | None, tasks_by: str, tasks_file: str | None, alphas: str,
             repeats: int, label_selection: str, compare_to: str | None, plot_dir: str | None,
             as_json: bool, embedder: str | None, candidates: str | None,
             max_params: str | None, **router_args: Any) -> None:
    """How well routing works on your benchmark data (leave one task out).

    \b
    lm-router evaluate
    lm-router evaluate --alpha 0,0.05,0.1 --repeats 10 --plot figures/
    lm-router evaluate --max-params 13B --compare-to llama-2-70b
    """
    from pathlib import Path

    from .evaluation import evaluate as run_evaluate, regroup_tasks, read_side_table
    from .router import Router
    from .store import Store, parse_params

    try:
        alpha_values = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of numbers: {alphas!r}", param_hint="--alpha"
                                 ) from exc
    try:
        limit = parse_params(max_params)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-params") from exc
    store = Store(store_dir)
    table = store.read_table(required=True)
    side = read_side_table(tasks_file) if tasks_file else None
    table = regroup_tasks(table, tasks_by, side)
    router = Router(embedder=embedder, **router_args)
    result = run_evaluate(table, store=store, router=router, alphas=alpha_values or [0.0],
                          repeats=repeats,
                          candidates=[c.strip() for c in candidates.split(",") if c.strip()]
                          if candidates else None, max_params=limit, compare_to=compare_to,
                          model_info=store.read_models(), label_selection=label_selection)
    if plot_dir:
        for path in _write_plots(result, Path(plot_dir)):
            click.echo(f"wrote {path}", err=True)
    if as_json:
        _echo_json(result.to_dict())
        return
    _print_evaluation(result)


def _write_plots(result: Any, folder: Any) -> list:
    from .plots import write_plots

    return write_plots(result, folder)


def _fmt(value: Any, width: int, spec: str = ".3f") -> str:
    """A number right-aligned in ``width`` columns; "-" for missing values."""
    if value is None or (isinstance(value, float) and value != value):
        return "-".rjust(width)
    return format(value, spec).rjust(width)


def _print_evaluation(result: Any) -> None:
    click.echo(f"leave-one-task-out over {result.n_tasks} tasks, {result.n_models} models "
               f"(embedder {result.settings['embedder']})")
    header = (f"{'row':<16} {'acc':>6} {'±std':>6} {'ratio':>6} {'pearson':>7} {'spearman':>8} "
              f"{'%BMA':>5} {'params':>7} {'rank':>5}")
    click.echo(header)
    click.echo("-" * len(header))
    for name, row in result.rows.items():
        params = row.get("params")
        params_text = "-" if params is None or params != params else _format_params(int(params))
        click.echo(f"{name:<16} {_fmt(row['acc'], 6)} {_fmt(row.get('acc_std'), 6)} "
                   f"{_fmt(row['ratio_to_best'], 6)} {_fmt(row['pearson'], 7)} "
                   f"{_fmt(row['spearman'], 8)} {_fmt(row['pct_bma'], 5, '.2f')} "
                   f"{params_text:>7} {_fmt(row['rank'], 5, '.2f')}")
    click.echo(f"\ncorrectness predictors on held-out tasks: accuracy "
               f"{result.predictor_accuracy:.3f}; kernel-smoothed p: MAE {result.p_mae:.3f}")
    for entry in result.alpha_sweep:
        click.echo(f"alpha {entry['alpha']:g}: predictor accuracy "
                   f"{entry['predictor_accuracy']:.3f}")
    click.echo("rows: s3 = S3 with the fallback to the best model on average (bma); "
               "X@alpha = with min(alpha n, 50) in-task labels, mean (±std) over repeats")


if __name__ == "__main__":  # pragma: no cover
    main()
