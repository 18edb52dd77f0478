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
@_user_errors
def ingest(adapter: str, paths: tuple[str, ...], store_dir: str | None, thresholds: str | None,
           models_file: str | None, replace: bool) -> None:
    """Read harness outputs into the store's correctness table.

    ADAPTER is lm-eval, helm or table (or a plugin's name).

    \b
    lm-router ingest lm-eval runs/
    lm-router ingest helm benchmark_output/runs/v1/
    lm-router ingest table results.parquet
    """
    from .ingest import ingest as run_ingest
    from .store import Store

    store = Store(store_dir)
    report = run_ingest(adapter, paths, store, thresholds=thresholds, models_file=models_file,
                        replace=replace)
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


if __name__ == "__main__":  # pragma: no cover
    main()
