"""The ``lm-router`` command line: a thin layer over the library.

Results go to stdout (a table, or JSON with --json); logs and progress go to stderr.
Exit codes: 0 success, 1 a user-facing error (one message, no traceback), 2 bad usage.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .errors import LMRouterError
from .neighbors import AUTO_FAISS_MIN_REFS, INDEX_KINDS

STORE_HELP = "Store folder (default: $LM_ROUTER_STORE or ./lm-router-store)."


def _store_option(fn: Callable) -> Callable:
    return click.option("--store", "store_dir", type=click.Path(file_okay=False),
                        envvar="LM_ROUTER_STORE", default=None, help=STORE_HELP)(fn)


def _user_errors(fn: Callable) -> Callable:
    """Turn library errors into one clear message: exit 1, or 2 for an out-of-range
    constant or an unreadable --max-params (bad usage)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .router import InvalidParameterError

        try:
            return fn(*args, **kwargs)
        except InvalidParameterError as exc:
            raise click.UsageError(str(exc)) from exc
        except LMRouterError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
@click.option("-q", "--quiet", is_flag=True, help="Only print warnings and errors on stderr.")
def main(quiet: bool) -> None:
    """Learn from per-sample benchmark results which LLM to use for a new task.

    \b
    lm-router ingest lm-eval runs/
    lm-router info
    lm-router recommend --task my_task --include-path task_configs/
    lm-router route --prompts prompts.txt
    lm-router plan-labels --task my_task --include-path task_configs/ --n 10
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
              help="Adapter setting, repeatable; helm: include_perturbed=true|false, "
                   "train_trials=mean|first, split=main|all|NAME (main: the test split if the "
                   "run has one, else all its splits; all: every split; NAME: that split). "
                   "lm-eval: tasks=a,b (only these tasks' files of an hf://datasets/ORG/NAME[@rev] "
                   "download); table takes none.")
@_user_errors
def ingest(adapter: str, paths: tuple[str, ...], store_dir: str | None, thresholds: str | None,
           models_file: str | None, replace: bool, adapter_options: tuple[str, ...]) -> None:
    """Read harness outputs into the store's correctness table.

    ADAPTER is lm-eval, helm or table (or a plugin's name).

    \b
    lm-router ingest lm-eval runs/
    lm-router ingest lm-eval hf://datasets/ORG/NAME@REVISION -o tasks=gsm8k
    lm-router ingest helm benchmark_output/runs/v1/
    lm-router ingest table results.parquet
    """
    from .ingest import ingest as run_ingest
    from .registry import adapters, unknown_name_message
    from .store import Store

    import yaml

    if adapter not in adapters.names():  # a typo is bad usage (exit 2), before any reading
        raise click.BadParameter(unknown_name_message("adapter", adapter, adapters.names()),
                                 param_hint="ADAPTER")
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
               f"{len(report.tasks)} tasks -> {store.root}")


@main.command()
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
    from .ingest import accuracy_table, score_summary
    from .store import Store

    store = Store(store_dir)
    # only the columns info reads, as categoricals: no string per row (10M rows: ~1 GB)
    table = store.read_table(columns=["task", "model", "metric", "score", "threshold",
                                      "correct"], required=True, categorical=True)
    accuracy, counts = accuracy_table(table)
    summary = score_summary(table)
    models = sorted(summary["model"].unique())
    tasks = sorted(summary["task"].unique())
    if as_json:
        nested: dict[str, dict[str, dict[str, Any]]] = {"metric": {}, "threshold": {},
                                                        "mean_score": {}}
        for row in summary.itertuples(index=False):
            eta = row.threshold
            nested["metric"].setdefault(row.task, {})[row.model] = row.metric
            nested["threshold"].setdefault(row.task, {})[row.model] = (
                None if isinstance(eta, float) and eta != eta else eta)
            nested["mean_score"].setdefault(row.task, {})[row.model] = (
                None if row.mean_score != row.mean_score else float(row.mean_score))
        _echo_json({"n_rows": len(table), "models": models, "tasks": tasks,
                    "accuracy": accuracy, "counts": counts, "model_metadata": store.read_models(),
                    **nested})
        return
    click.echo(f"{len(table)} rows, {len(models)} models, {len(tasks)} tasks ({store.root})")
    rows = [("model", "task", "metric", "eta", "mean score", "acc", "n")]
    for r in summary.sort_values(["model", "task"]).itertuples(index=False):
        eta = r.threshold
        rows.append((r.model, r.task, r.metric or "-",
                     "-" if isinstance(eta, float) and eta != eta else (
                         f"{eta:g}" if isinstance(eta, float) else str(eta)),
                     _fmt(r.mean_score, 0, ".4f"), f"{r.acc:.4f}", str(r.n)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = 3  # model, task and metric are left-aligned; numbers right-aligned
    for i, row in enumerate(rows):
        cells = [c.ljust(w) if j < left else c.rjust(w) for j, (c, w) in
                 enumerate(zip(row, widths))]
        click.echo("  ".join(cells).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
    click.echo("\nacc: share of rows counted correct (score > eta, or < eta where lower is "
               "better; eta '-': a binary metric, correct when 1)")


def _format_params(params: int | None) -> str:
    if params is None:
        return "-"
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def _key_values(items: tuple[str, ...], option: str) -> dict[str, Any]:
    """{KEY: VALUE} from repeated KEY=VALUE options (values read as YAML: 3, 0.5, true)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _comma_list(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from .embedding import parse_devices

    try:
        parse_devices(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


_EMBEDDER_OPTIONS = [
    click.option("--embedder", default=None, envvar="LM_ROUTER_EMBEDDER",
                 help="sentence-transformers name or local folder (default all-MiniLM-L6-v2, "
                      "packaged copy; also 'minilm'), or 'static' for a model2vec static "
                      "embedder distilled from it on first use (needs "
                      "lm-router-plugin[static]); 'static:NAME_OR_FOLDER' distils another."),
    click.option("--device", default=None, envvar="LM_ROUTER_DEVICE", callback=_check_device,
                 help="Where the embedder runs: cpu, cuda, cuda:1, ... Several, "
                      "comma-separated (cuda:0,cuda:1), run sentence-transformers' "
                      "multi-process pool, one process per device."),
    click.option("--max-seq-length", type=int, default=None,
                 help="Truncate texts to this many tokens before embedding (default: the "
                      "embedder's limit)."),
]
_CANDIDATE_OPTIONS = [
    click.option("--candidates", default=None, help="Comma-separated models to choose among."),
    click.option("--max-params", default=None,
                 help="Only models with at most this many parameters (e.g. 13B)."),
]
_PREDICTOR_OPTIONS = [
    click.option("--k", "k", default=5, show_default=True, type=int,
                 help="Neighbours of the kNN correctness predictor."),
    click.option("--predictor", default="knn", show_default=True,
                 help="Registered correctness predictor (entry point lm_router.predictors)."),
    click.option("--predictor-param", "predictor_param", multiple=True, metavar="KEY=VALUE",
                 help="Parameter of the predictor, repeatable (e.g. C=0.5)."),
]
_TASK_SCORE_OPTIONS = [
    click.option("--kappa", default=19, show_default=True, type=int,
                 help="Neighbours for the task distance u."),
    click.option("--sigma", default=0.09, show_default=True, type=float,
                 help="Kernel bandwidth of the confidence model p (no refit when changed)."),
    click.option("--t", "t", default=0.5, show_default=True, type=float,
                 help="Threshold on g for S2/S3."),
    click.option("--eta", default=0.6, show_default=True, type=float,
                 help="Required P(choice beats the best model on average) (no refit)."),
    click.option("--n-draws", default=1000, show_default=True, type=int,
                 help="Monte Carlo draws of the fallback test (no refit)."),
    click.option("--seed", default=0, show_default=True, type=int,
                 help="Seed of the Monte Carlo test and of evaluation's samples (no refit)."),
]

# Neighbour search over the reference pool (neighbors.py); the numbers are checked by
# Router.validate_params like the other constants.
_INDEX_OPTIONS = [
    click.option("--index", "index", type=click.Choice(INDEX_KINDS), default="auto",
                 show_default=True, envvar="LM_ROUTER_INDEX",
                 help="Neighbour search: auto (exact; faiss's kernels from --index-threshold "
                      "reference inputs when faiss-cpu is installed), exact (numpy), "
                      "faiss-flat (exact), faiss-ivf (approximate, saved with the router; "
                      "needs lm-router-plugin[faiss])."),
    click.option("--index-threshold", "index_threshold", type=int,
                 default=AUTO_FAISS_MIN_REFS, show_default=True,
                 help="Reference inputs from which --index auto uses faiss-flat."),
    click.option("--nlist", type=int, default=None,
                 help="faiss-ivf: inverted lists (default round(sqrt(reference inputs)))."),
    click.option("--nprobe", type=int, default=None,
                 help="faiss-ivf: lists searched per query (default ceil(nlist / 8); no "
                      "refit when changed)."),
]


def _options(*groups: list) -> Callable:
    def apply(fn: Callable) -> Callable:
        for option in reversed([o for group in groups for o in group]):
            fn = option(fn)
        return fn
    return apply


def _router_params(args: dict[str, Any]) -> dict[str, Any]:
    """Router keyword arguments from the parsed CLI options (pops them from ``args``)."""
    params = {name: args.pop(name) for name in ("embedder", "device", "max_seq_length", "k",
                                                "kappa", "sigma", "t", "eta", "n_draws",
                                                "seed", "predictor", "index",
                                                "index_threshold", "nlist", "nprobe")
              if name in args}
    params["predictor_params"] = _key_values(args.pop("predictor_param", ()),
                                             "--predictor-param")
    return params


_LABELED_OPTIONS = [
    click.option("--labeled", "labeled", multiple=True, type=click.Path(exists=True),
                 help="lm-eval sample logs of the new task (few in-task labels), repeatable."),
    click.option("--plan", "plan", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="PREFIX.plan.json of 'plan-labels': weights the --labeled docs by their "
                      "inclusion probabilities."),
    click.option("--thresholds", type=click.Path(dir_okay=False), default=None,
                 help="Thresholds YAML for --labeled rows (default: the eta the store's rows "
                      "were labelled with)."),
]
_NEW_TASK_OPTIONS = [
    click.option("--task", default=None, help="lm-eval task (or group/tag) name."),
    click.option("--include-path", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Folder of extra lm-eval task YAMLs (as lm_eval --include_path)."),
    click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), default=None,
                 help="Prompts of the new task: text (one per line) or JSONL with 'prompt'."),
    click.option("--limit", type=int, default=None, help="Use only the first N docs of --task."),
]


@main.command()
@_options(_NEW_TASK_OPTIONS, _LABELED_OPTIONS)
@click.option("--score", type=click.Choice(["s1", "s2", "s3", "stack", "post"]),
              default="stack", show_default=True,
              help="Score that picks the model (stack: the switch learned leave-one-task-out "
                   "on the reference tasks; with --labeled docs, their paired accuracy differences "
                   "update its predictions, weighted by their precision; "
                   "s3: the paper's, with fallback to the best on average; "
                   "post: highest estimated accuracy from the label posterior, same fallback "
                   "test against eta).")
@_options(_EMBEDDER_OPTIONS, _CANDIDATE_OPTIONS, _PREDICTOR_OPTIONS, _TASK_SCORE_OPTIONS,
          _INDEX_OPTIONS)
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def recommend(task: str | None, include_path: str | None, prompts_file: str | None,
              limit: int | None, labeled: tuple[str, ...], plan: str | None,
              thresholds: str | None, score: str, store_dir: str | None, as_json: bool,
              candidates: str | None, max_params: str | None, **args: Any) -> None:
    """Which model to use for a new task, and how sure we are.

    \b
    lm-router recommend --task my_task --include-path task_configs/
    lm-router recommend --prompts prompts.txt --max-params 13B --json
    lm-router recommend --task my_task --labeled my_task-runs --plan my_task.plan.json
    """
    from . import api

    if (task is None) == (prompts_file is None):
        raise click.UsageError("give exactly one of --task NAME or --prompts FILE")
    rec = api.recommend(store_dir, task=task, include_path=include_path,
                        prompts_file=prompts_file, limit=limit, labeled=labeled, plan=plan,
                        thresholds=thresholds, score=score,
                        candidates=_comma_list(candidates), max_params=max_params,
                        **_router_params(args))
    if as_json:
        _echo_json(rec.to_dict())
        return
    _print_recommendation(rec)


RECOMMEND_LEGEND = (
    "S1 = mean predicted P(correct) over the task's inputs; S2 = share of inputs predicted "
    "correct (g > t); p = estimated accuracy of those per-input predictions on this task "
    "(from reference tasks at a similar distance u); S3 = expected accuracy given S2 and p. "
    "gain = the stacked switch's predicted accuracy gain over the best model on average "
    "(weights of S1, S3 and the mean accuracy learned on the reference tasks). "
    "u = mean cosine distance of the task's inputs to their nearest reference inputs.")


def _print_recommendation(rec: Any) -> None:
    click.echo(f"task {rec.task}: {rec.n_inputs} inputs, distance to the reference tasks "
               f"u = {rec.u:.3f} (reference tasks: {rec.u_reference_range[0]:.3f} to "
               f"{rec.u_reference_range[1]:.3f})")
    width = max([len("model")] + [len(row.model) for row in rec.models])
    header = (f"{'model':<{width}} {'S1':>6} {'S2':>6} {'S3':>6} {'p':>6} {'gain':>7} "
              f"{'params':>7}")
    click.echo(header)
    click.echo("-" * len(header))
    for row in rec.models:
        mark = "  <- choice" if row.model == rec.choice else (
            "  (best on average)" if row.model == rec.bma else "")
        click.echo(f"{row.model:<{width}} {row.s1:6.3f} {row.s2:6.3f} {row.s3:6.3f} "
                   f"{row.p:6.3f} {row.stack:+7.3f} {_format_params(row.params):>7}{mark}")
    click.echo(f"\nchoice: {rec.choice}" + (" (fell back to the best model on average)"
                                           if rec.fallback else ""))
    click.echo(f"why: {rec.reason}")
    if rec.u_note:
        click.echo(f"note: {rec.u_note}")
    if rec.nearest_tasks:
        near = ", ".join(f"{n['task']} ({n['share']:.0%})" for n in rec.nearest_tasks)
        click.echo(f"nearest reference tasks: {near}")
    if rec.estimates:
        _print_estimates(rec, width)
    click.echo(f"\n{RECOMMEND_LEGEND}")
    if rec.estimates:
        click.echo(ESTIMATE_LEGEND)


ESTIMATE_LEGEND = (
    "acc = estimated accuracy on the task: the router's zero-label prediction corrected by "
    "its bias on the reference tasks, combined with the labelled docs (weighted 1/inclusion "
    "probability with --plan); 90% = its interval; P(best) = probability it is the best "
    "candidate; labels = labelled docs of the model. Expected gain = how much the accuracy "
    "of the final choice should rise with N more labels per candidate: for the stacked "
    "switch (the default), how much more its rule fitted for N more labels gained over BMA, "
    "leave-one-task-out on the reference tasks (measured; can be < 0); for --score post "
    "(and the paper's scores), the posterior's preposterior analysis.")


def _print_estimates(rec: Any, width: int) -> None:
    source = (f"{rec.n_labelled_docs} labelled docs" if rec.n_labelled_docs
              else "no labels yet")
    click.echo(f"\nestimated accuracy (zero-label prediction + {source}):")
    header = f"{'model':<{width}} {'acc':>6} {'90% interval':>13} {'P(best)':>7} {'labels':>6}"
    click.echo(header)
    click.echo("-" * len(header))
    for row in rec.estimates:
        interval = f"{row['low']:.3f}-{row['high']:.3f}"
        click.echo(f"{row['model']:<{width}} {row['acc']:6.3f} {interval:>13} "
                   f"{row['p_best']:7.2f} {row['n_labels']:6d}")
    click.echo(rec.labels_verdict)


@main.command("plan-labels")
@_options(_NEW_TASK_OPTIONS)
@click.option("--n", "n", type=click.IntRange(min=1), required=True,
              help="How many more docs to label (each candidate runs them).")
@click.option("--labeled", "labeled", multiple=True, type=click.Path(exists=True),
              help="lm-eval sample logs of docs labelled so far (excluded; they inform which "
                   "candidates lead), repeatable.")
@click.option("--plan", "plan", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The previous PREFIX.plan.json: its docs are excluded and the new round "
                   "is appended to it.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="PREFIX of PREFIX.samples.json / PREFIX.plan.json (default: the --plan's, "
                   "else the task name).")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None,
              help="Thresholds YAML for --labeled rows (default: the eta the store's rows "
                   "were labelled with).")
@_options(_EMBEDDER_OPTIONS, _CANDIDATE_OPTIONS, _PREDICTOR_OPTIONS, _TASK_SCORE_OPTIONS,
          _INDEX_OPTIONS)
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def plan_labels(task: str | None, include_path: str | None, prompts_file: str | None,
                limit: int | None, n: int, labeled: tuple[str, ...], plan: str | None,
                out: str | None, thresholds: str | None, store_dir: str | None,
                as_json: bool, candidates: str | None, max_params: str | None,
                **args: Any) -> None:
    """Which docs of a new task to label so the choice is decided fastest.

    Writes PREFIX.samples.json (lm-eval's --samples) and PREFIX.plan.json, and prints the
    lm_eval command for each candidate. Run it again with --labeled and --plan after the
    labels came in to plan the next round.

    \b
    lm-router plan-labels --task my_task --include-path task_configs/ --n 10
    lm-router plan-labels --task my_task --include-path task_configs/ --n 10 \\
        --labeled my_task-runs --plan my_task.plan.json
    """
    from . import api

    if (task is None) == (prompts_file is None):
        raise click.UsageError("give exactly one of --task NAME or --prompts FILE")
    if limit is not None and task is None:
        raise click.UsageError("--limit applies to --task only")
    result = api.plan_labels(store_dir, n=n, task=task, include_path=include_path,
                             limit=limit, prompts_file=prompts_file, labeled=labeled,
                             plan=plan, out=out, thresholds=thresholds,
                             candidates=_comma_list(candidates), max_params=max_params,
                             **_router_params(args))
    if as_json:
        _echo_json(result.to_dict())
        return
    _print_plan(result, task=task, include_path=include_path, prompts_file=prompts_file)


def _print_plan(result: Any, *, task: str | None, include_path: str | None,
                prompts_file: str | None) -> None:
    short = "" if len(result.docs) == result.n_requested else \
        f" (asked for {result.n_requested}; no more docs left)"
    click.echo(f"round {result.round} for {result.task}: {len(result.docs)} of "
               f"{result.n_docs} docs to label{short}; {result.n_labelled} labelled and "
               f"{result.n_planned_before} planned before")
    click.echo(f"leading candidates (the docs are where they disagree most): "
               f"{', '.join(result.leaders)}")
    click.echo(f"wrote {result.samples_file} and {result.plan_file}")
    if result.commands:
        click.echo("\nrun every candidate on these docs (the model ids as stored; adapt "
                   "--model/--model_args to how you run each model):")
        for command in result.commands:
            click.echo(f"  {command}")
        where = f"--task {task}" + (f" --include-path {include_path}" if include_path else "")
        labeled = result.output_path
    else:
        click.echo(f"\nlabel these prompts (0-based indices of the prompts in "
                   f"{prompts_file}) with every candidate: "
                   f"{', '.join(map(str, result.docs))}")
        where, labeled = f"--prompts {prompts_file}", "RUNS"
    click.echo(f"\nthen: lm-router recommend {where} --labeled {labeled} --plan "
               f"{result.plan_file}")
    click.echo(f"more: lm-router plan-labels {where} --n N --labeled {labeled} --plan "
               f"{result.plan_file}")


@main.command()
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), required=True,
              help="Text (one prompt per line) or JSONL with 'prompt'.")
@_options(_EMBEDDER_OPTIONS, _CANDIDATE_OPTIONS, _PREDICTOR_OPTIONS, _INDEX_OPTIONS)
@_store_option
@click.option("--json", "as_json", is_flag=True,
              help="JSONL with g per model (default: index and chosen model per line).")
@_user_errors
def route(prompts_file: str, store_dir: str | None, as_json: bool, candidates: str | None,
          max_params: str | None, **args: Any) -> None:
    """Per-prompt routing: the model most likely to answer each prompt correctly.

    Only the options that change a per-prompt choice are offered; the task-level constants
    of recommend (--kappa, --sigma, --t, --eta, --seed) do not enter it.

    \b
    lm-router route --prompts prompts.txt
    lm-router route --prompts prompts.jsonl --max-params 13B --json > routes.jsonl
    """
    from . import api

    decisions = api.route(store_dir, prompts_file=prompts_file,
                          candidates=_comma_list(candidates), max_params=max_params,
                          **_router_params(args))
    for d in decisions:
        if as_json:
            click.echo(json.dumps({"index": d.index, "model": d.model, "g": d.g}))
        else:
            click.echo(f"{d.index}\t{d.model}")


def _numbers(value: str, option: str, kind: type = float) -> list:
    try:
        return [kind(a) for a in value.split(",") if a.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of numbers: {value!r}", param_hint=option) from exc


@main.command()
@_store_option
@click.option("--tasks-by", default="task", show_default=True,
              help="Column that defines the tasks: task, benchmark, or a column of --tasks-file.")
@click.option("--tasks-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Side table (CSV/TSV/Parquet, may be .gz) with instance_id [, task] and the "
                   "--tasks-by column, e.g. MMLU-Pro's instances.tsv.gz with 'src'.")
@click.option("--alpha", "alphas", default="0", show_default=True,
              help="Comma-separated fractions of in-task labels, e.g. 0,0.02,0.05,0.1,0.2,0.3 "
                   "(min(alpha n, 50) labels per task).")
@click.option("--labels", "label_counts", default="", show_default=False,
              help="Comma-separated numbers of in-task labels per task, e.g. 5,10,20,30.")
@click.option("--repeats", default=10, show_default=True, type=int,
              help="Seeded repetitions per alpha / label count.")
@click.option("--label-selection", type=click.Choice(["random", "diverse"]), default="random",
              show_default=True, help="How in-task labels are picked (random: the paper).")
@click.option("--compare-to", default=None, help="Model to report beside the routed choice.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write PNG figures into this folder (needs matplotlib).")
@_options(_EMBEDDER_OPTIONS, _CANDIDATE_OPTIONS, _PREDICTOR_OPTIONS, _TASK_SCORE_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_user_errors
def evaluate(store_dir: str | None, tasks_by: str, tasks_file: str | None, alphas: str,
             label_counts: str, repeats: int, label_selection: str, compare_to: str | None,
             plot_dir: str | None, as_json: bool, candidates: str | None,
             max_params: str | None, **args: Any) -> None:
    """How well routing works on your benchmark data (strict leave one task out).

    \b
    lm-router evaluate
    lm-router evaluate --alpha 0,0.05,0.1 --labels 10,20 --repeats 10 --plot figures/
    lm-router evaluate --max-params 13B --compare-to llama-2-70b
    """
    from pathlib import Path

    from .api import check_request
    from .evaluation import evaluate as run_evaluate, regroup_tasks, read_side_table
    from .store import Store

    alpha_values = _numbers(alphas, "--alpha")
    counts = _numbers(label_counts, "--labels", int)
    if any(a < 0 or a >= 1 for a in alpha_values) or any(c < 1 for c in counts):
        raise click.UsageError("--alpha values must be in [0, 1) and --labels counts >= 1")
    if repeats < 1:
        raise click.UsageError("--repeats must be >= 1")
    store = Store(store_dir)
    params = _router_params(args)
    router, limit = check_request(store, params, candidates=_comma_list(candidates),
                                  max_params=max_params)
    # categorical columns: at leaderboard scale (10M rows) strings per row would take GBs
    table = store.read_table(required=True, categorical=True)
    side = read_side_table(tasks_file) if tasks_file else None
    table = regroup_tasks(table, tasks_by, side)
    result = run_evaluate(table, store=store, router=router, alphas=alpha_values or [0.0],
                          label_counts=counts, repeats=repeats,
                          candidates=_comma_list(candidates), max_params=limit,
                          compare_to=compare_to, model_info=store.read_models(),
                          label_selection=label_selection)
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


EVALUATE_LEGEND = """\
columns (averages over held-out tasks; each task is scored by a router fitted without it):
  acc      true accuracy of the chosen model on the held-out task
  95% CI   bootstrap interval of acc over tasks (1000 resamples; label rows: of each
           task's acc averaged over the repeats)
  half     acc on random half-splits of each task (label rows: of its unlabelled items);
           for oracle: best model chosen on one half, scored on the other (the noise-free
           ceiling)
  gap      share of the BMA -> Oracle gap closed: sum(row - bma) / sum(oracle - bma)
  gap½     the same on the half-splits, against the split-half Oracle
  W/T/L    tasks where the row beats / ties / loses to BMA (ties: same accuracy)
  ratio    acc / accuracy of the best model on the task
  pear/spear  Pearson / Spearman correlation across models of the row's score with the
           models' true accuracies on the task (s1, s2, s3 rows)
  %BMA     share of tasks where the best model on average was chosen
  rank     rank of the chosen model on the task among the candidates (1 = best)
rows: s1/s2/s3 = the paper's scores (s3 falls back to bma), s3_true_p = S3 with the true p,
stack = the switch learned leave-one-task-out on the reference tasks (ours; with labels,
their paired accuracy differences update its predictions), cal/post = the label posterior
(ours), moe = per-input choice, bma = best model on average of the other tasks, oracle =
best model on the task; X@alpha and X@Nlabels = with in-task labels (mean ± std over
repeats, scored on the unlabelled items), few_shot = best model on the labels alone,
X_planned = on as many labels drawn by the planner (weighted by 1/inclusion probability).
uncertainty check (per label count; random labels): in 90% int. = share of candidates whose
accuracy on the scored items lies in the posterior's 90% interval (honest: ~0.90); P(best)
top = the P(best) of its most probable candidate, was best = how often that one was the
best (honest: equal); Brier = sum over candidates of (P(best) - 1[best])^2; +10: said / got
= the posterior's expected gain of 10 more labels in points, and what 10 more labels gave
its choice; stack P / won = the stacked switch's P(its best beats BMA) and how often it did,
over the n (task, repeat) pairs where its best was not BMA; stack +10: said / got = the
same expected gain for the stacked switch (recommend's verdict) and what it got."""


def _print_evaluation(result: Any) -> None:
    click.echo(f"strict leave-one-task-out over {result.n_tasks} tasks, {result.n_models} "
               f"models (embedder {result.settings['embedder']}, predictor "
               f"{result.settings['predictor']})")
    header = (f"{'row':<22} {'acc':>6} {'±std':>6} {'95% CI':>13} {'half':>6} {'gap':>6} "
              f"{'gap½':>6} {'W/T/L':>11} {'ratio':>6} {'pear':>6} {'spear':>6} {'%BMA':>5} "
              f"{'params':>7} {'rank':>5}")
    click.echo(header)
    click.echo("-" * len(header))
    for name, row in result.rows.items():
        params = row.get("params")
        params_text = "-" if params is None or params != params else _format_params(int(params))
        ci = row.get("acc_ci")
        ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        # means over repeats in the label rows: one decimal
        wtl = "-" if row.get("wins") is None else "/".join(
            format(row[k], ".3g" if float(row[k]).is_integer() else ".1f")
            for k in ("wins", "ties", "losses"))
        click.echo(f"{name:<22} {_fmt(row['acc'], 6)} {_fmt(row.get('acc_std'), 6)} "
                   f"{ci_text:>13} {_fmt(row.get('acc_half'), 6)} "
                   f"{_fmt(row.get('gap_closed'), 6, '.2f')} "
                   f"{_fmt(row.get('gap_closed_half'), 6, '.2f')} {wtl:>11} "
                   f"{_fmt(row['ratio_to_best'], 6)} {_fmt(row['pearson'], 6)} "
                   f"{_fmt(row['spearman'], 6)} {_fmt(row['pct_bma'], 5, '.2f')} "
                   f"{params_text:>7} {_fmt(row['rank'], 5, '.2f')}")
    click.echo(f"\ncorrectness predictors on held-out tasks: accuracy "
               f"{result.predictor_accuracy:.3f}; kernel-smoothed p: MAE {result.p_mae:.3f}")
    for entry in result.alpha_sweep:
        what = (f"alpha {entry['alpha']:g}" if entry.get("alpha") is not None
                else f"{entry['labels']} labels")
        click.echo(f"{what}: {entry['mean_labels']:.1f} labels per task on average, "
                   f"predictor accuracy {entry['predictor_accuracy']:.3f}")
    _print_uncertainty(result.uncertainty)
    click.echo("\n" + EVALUATE_LEGEND)


def _print_uncertainty(entries: list) -> None:
    """Predicted vs realised: how honest the stated uncertainty was on the held-out tasks."""
    if not entries:
        return
    click.echo("\nthe stated uncertainty against what happened (held-out tasks; label posterior "
               "of `recommend`, and the stacked switch's P):")
    header = (f"{'labels':<11} {'in 90% int.':>11} {'P(best) top':>11} {'was best':>8} "
              f"{'Brier':>6} {'+10: said':>9} {'got':>6} {'stack P':>7} {'won':>5} "
              f"{'n':>4} {'stack +10: said':>15} {'got':>6}")
    click.echo(header)
    click.echo("-" * len(header))
    for e in entries:
        what = f"alpha {e['alpha']:g}" if e.get("alpha") is not None else str(e["labels"])
        said, got, stack_said, stack_got = (
            None if e[k] is None or e[k] != e[k] else e[k] * 100
            for k in ("gain_predicted", "gain_realised", "stack_gain_predicted",
                      "stack_gain_realised"))
        click.echo(f"{what:<11} {_fmt(e['coverage'], 11)} {_fmt(e['p_best_top'], 11)} "
                   f"{_fmt(e['top_is_best'], 8)} {_fmt(e['brier'], 6)} "
                   f"{_fmt(said, 9, '+.2f')} {_fmt(got, 6, '+.2f')} "
                   f"{_fmt(e['stack_p'], 7, '.2f')} {_fmt(e['stack_won'], 5, '.2f')} "
                   f"{e['stack_n']:>4} {_fmt(stack_said, 15, '+.2f')} "
                   f"{_fmt(stack_got, 6, '+.2f')}")


if __name__ == "__main__":  # pragma: no cover
    main()
