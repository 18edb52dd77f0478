"""Everything the command line prints: tables, legends and next-step lines.

The library returns objects (Recommendation, PlanResult, EvaluationResult, info dicts);
these functions turn them into text. Results go to stdout; nothing here computes a result.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from typing import Any

import click


def echo_json(data: Any) -> None:
    """``data`` as JSON; nan and infinite numbers as null (JSON has no NaN: other parsers
    refuse the bare ``NaN`` Python writes)."""
    click.echo(json.dumps(_json_safe(data), indent=2, sort_keys=False, allow_nan=False,
                          default=_json_default))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_params(params: int | None) -> str:
    if params is None:
        return "-"
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def fmt(value: Any, width: int, spec: str = ".3f") -> str:
    """A number right-aligned in ``width`` columns; "-" for missing values."""
    if value is None or (isinstance(value, float) and value != value):
        return "-".rjust(width)
    return format(value, spec).rjust(width)


# -- info --------------------------------------------------------------------------------
def print_info(data: dict[str, Any]) -> None:
    summary = data["summary"]
    click.echo(f"{data['n_rows']} rows, {len(data['models'])} models, {len(data['tasks'])} "
               f"tasks ({data['store']})")
    rows = [("model", "task", "metric", "eta", "mean score", "acc", "n")]
    for r in summary.sort_values(["model", "task"]).itertuples(index=False):
        eta = r.threshold
        rows.append((r.model, r.task, r.metric or "-",
                     "-" if isinstance(eta, float) and eta != eta else (
                         f"{eta:g}" if isinstance(eta, float) else str(eta)),
                     fmt(r.mean_score, 0, ".4f"), f"{r.acc:.4f}", str(r.n)))
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


# -- recommend ---------------------------------------------------------------------------
RECOMMEND_LEGEND = (
    "S1 = mean predicted P(correct) over the task's inputs; S2 = share of inputs predicted "
    "correct (g > t); p = estimated accuracy of those per-input predictions on this task "
    "(from reference tasks at a similar distance u); S3 = expected accuracy given S2 and p. "
    "gain = the stacked switch's predicted accuracy gain over the best model on average "
    "(weights of S3, the mean accuracy and S1, learned on the reference tasks; its S1 is "
    "task-level, over each input's predictor.task_k most similar reference inputs, 200 by "
    "default, or the S1 above with task_k 0; the reason line says which; with labelled docs, "
    "updated "
    "for every candidate at once by the labels' differences to that model). "
    "u = mean cosine distance of the task's inputs to their nearest reference inputs.")

ESTIMATE_LEGEND = (
    "acc = estimated accuracy on the task: the router's zero-label prediction corrected by "
    "its bias on the reference tasks, combined with the labelled docs; 90% = its interval; "
    "P(best) = probability it is the best candidate; labels = labelled docs of the model. "
    "This posterior is a report beside the decision, not the decision: its order can "
    "differ from the choice. Expected gain = how much the accuracy of the final choice "
    "should rise with N more labels per candidate: for the stacked switch (the default), "
    "how much more its rule fitted for N more labels gained over BMA, leave-one-task-out on "
    "the reference tasks (measured; can be < 0); for the paper's scores, the posterior's "
    "preposterior analysis.")


RECOMMEND_LEGEND_SCORE = (
    "--target score: predicted {what} = S1, the mean over the task's inputs of the model's "
    "predicted metric value (kNN: its mean on the k nearest reference inputs){units}. "
    "gain = the stacked switch's predicted gain over the best model on average, same units "
    "(positive = better, also for a lower-is-better metric), learned leave-one-task-out on "
    "the reference tasks. No S2, S3 or p: they count inputs with g > t, an arbitrary cut of "
    "a metric's range. u = mean cosine distance of the task's inputs to their nearest "
    "reference inputs.")

ESTIMATE_LEGEND_SCORE = (
    "mean = estimated mean {what} of the model on the task{short}: recommend's label "
    "posterior (the zero-label prediction corrected by its bias on the reference tasks, "
    "combined with any labelled docs), a Gaussian estimate made for accuracies and applied "
    "here to mean metric values: its bias, covariances and noise are measured on these "
    "values, but its 90% intervals ran narrower than stated on real data "
    "(docs/raw-metrics.md). P(best) = probability it is the best candidate; labels = "
    "labelled docs of the model. A report beside the decision, not the decision. Expected "
    "gain of more labels: in points, hundredths of the normalised 0-1 range{points}.")


def _raw_spec(rec: Any, sign: str = "") -> str:
    """Format of values in the one metric's units: three significant decimals of its span
    (0-1: .3f, 0-100: .1f), one width for the whole column."""
    scale = rec.scales[rec.units]
    span = scale["hi"] - scale["lo"]
    decimals = 3 if span <= 0 else max(0, 3 - math.floor(math.log10(span)))
    return f"{sign}.{decimals}f"


def _score_units(rec: Any) -> tuple[str, str, str, str]:
    """(what the values are, the units clause of the table's legend, a short one, the
    points clause) of a target-"score" recommendation."""
    if len(rec.scales) == 1:
        scale = rec.scales[rec.units]
        direction = "higher" if scale["higher_is_better"] else "lower"
        span = scale["hi"] - scale["lo"]
        return (rec.units, f", in {rec.units}'s own units ({direction} is better; the "
                f"store's values span {scale['lo']:g} to {scale['hi']:g})",
                f" (in {rec.units})", f" (1 point = {span / 100:g} {rec.units})")
    return ("value", f", normalised 0-1 per metric (1 = the metric's best value in the "
            f"store, 0 its worst; metrics {', '.join(rec.metrics)}: no common unit)",
            " (normalised 0-1 per metric)", "")


def print_recommendation(rec: Any) -> None:
    labelled = getattr(rec, "n_labelled_docs", 0)
    inputs = (f"{rec.n_inputs} unlabelled inputs (+ {labelled} labelled)" if labelled
              else f"{rec.n_inputs} inputs")
    click.echo(f"task {rec.task}: {inputs}, distance to the reference tasks "
               f"u = {rec.u:.3f} (reference tasks: {rec.u_reference_range[0]:.3f} to "
               f"{rec.u_reference_range[1]:.3f})")
    score = getattr(rec, "target", "correct") == "score"
    width = max([len("model")] + [len(row.model) for row in rec.models])
    if score:
        what = _score_units(rec)[0]
        one = len(rec.scales) == 1
        title = f"predicted {what}"
        w = max(len(title), 9)
        click.echo("--target score: values in " + (rec.units if one else
                   f"{rec.units} ({', '.join(rec.metrics)})"))
        header = f"{'model':<{width}} {title:>{w}} {'gain':>{w}} {'params':>7}"
    else:
        header = (f"{'model':<{width}} {'S1':>6} {'S2':>6} {'S3':>6} {'p':>6} {'gain':>7} "
                  f"{'params':>7}")
    click.echo(header)
    click.echo("-" * len(header))
    for row in rec.models:
        mark = "  <- choice" if row.model == rec.choice else (
            "  (best on average)" if row.model == rec.bma else "")
        if score:
            s1, gain = (row.s1_raw, row.stack_raw) if one else (row.s1, row.stack)
            click.echo(f"{row.model:<{width}} {fmt(s1, w, _raw_spec(rec) if one else '.3f')} "
                       f"{fmt(gain, w, _raw_spec(rec, '+') if one else '+.3f')} "
                       f"{format_params(row.params):>7}{mark}")
        else:
            click.echo(f"{row.model:<{width}} {row.s1:6.3f} {row.s2:6.3f} {row.s3:6.3f} "
                       f"{row.p:6.3f} {fmt(row.stack, 7, '+.3f')} "
                       f"{format_params(row.params):>7}{mark}")
    by = "gain" if rec.decided_by == "stack" else (
        f"predicted {what}" if score and rec.decided_by in ("s1", "bma")
        else rec.decided_by.upper())
    click.echo(f"(the choice first, then by {by})")
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
    if score:
        what, units, short, points = _score_units(rec)
        click.echo("\n" + RECOMMEND_LEGEND_SCORE.format(what=what, units=units))
        if rec.estimates:
            click.echo(ESTIMATE_LEGEND_SCORE.format(what=what, short=short, points=points))
        return
    click.echo(f"\n{RECOMMEND_LEGEND}")
    if rec.estimates:
        click.echo(ESTIMATE_LEGEND)


def _print_estimates(rec: Any, width: int) -> None:
    source = (f"{rec.n_labelled_docs} labelled docs" if rec.n_labelled_docs
              else "no labels yet")
    if rec.decided_by == "labels":  # every doc labelled: measured, not estimated
        source = f"every doc labelled, {rec.n_labelled_docs}: measured"
    score = getattr(rec, "target", "correct") == "score"
    one = score and len(rec.scales) == 1
    if score:
        what = _score_units(rec)[0]
        click.echo(f"\nestimated mean {what} on the task ({'' if one else rec.units + '; '}"
                   f"label posterior: zero-label prediction + {source}):")
        column, spec = "mean", _raw_spec(rec) if one else ".3f"
    else:
        click.echo(f"\nestimated accuracy (label posterior: zero-label prediction + {source}):")
        column, spec = "acc", ".3f"
    keys = ("acc_raw", "low_raw", "high_raw") if one else ("acc", "low", "high")
    rows = [(row, format(row[keys[0]], spec), f"{row[keys[1]]:{spec}}-{row[keys[2]]:{spec}}")
            for row in rec.estimates]
    w = max([6] + [len(r[1]) for r in rows])
    iw = max([13] + [len(r[2]) for r in rows])
    header = (f"{'model':<{width}} {column:>{w}} {'90% interval':>{iw}} {'P(best)':>7} "
              f"{'labels':>6}")
    click.echo(header)
    click.echo("-" * len(header))
    for row, value, interval in rows:
        click.echo(f"{row['model']:<{width}} {value:>{w}} {interval:>{iw}} "
                   f"{row['p_best']:7.2f} {row['n_labels']:6d}")
    click.echo(rec.labels_verdict)
    if rec.plan_note:
        click.echo(f"plan: {rec.plan_note}")


# -- route -------------------------------------------------------------------------------
def print_routes(decisions: Sequence[Any], as_json: bool) -> None:
    for d in decisions:
        if as_json:
            units = {"units": d.units} if hasattr(d, "units") else {}  # --target score
            click.echo(json.dumps({"index": d.index, "model": d.model, "g": d.g, **units}))
        else:
            click.echo(f"{d.index}\t{d.model}")


# -- plan-labels -------------------------------------------------------------------------
def command_line(words: Sequence[str | None]) -> str:
    """A shell-quoted command from words (None words are dropped)."""
    return " ".join(shlex.quote(w) for w in words if w is not None)


def print_plan(result: Any, next_steps: dict[str, str]) -> None:
    """The round's docs, the lm_eval lines and ``next_steps`` {"then": ..., "more": ...}:
    commands that run as printed."""
    short = "" if len(result.docs) == result.n_requested else \
        f" (asked for {result.n_requested}; no more docs left)"
    open_ = result.n_open or result.n_docs
    click.echo(f"round {result.round} for {result.task}: {len(result.docs)} of the {open_} "
               f"docs left to label{short} ({result.n_docs} in the task; a random sample, "
               f"stratified over the task's subtasks; seed {result.seed}); "
               f"{result.n_labelled} labelled and {result.n_planned_before} planned before")
    click.echo(f"wrote {result.samples_file} and {result.plan_file}")
    if result.commands:
        click.echo("\nrun every candidate on these docs (the model ids as stored; adapt "
                   "--model/--model_args to how you run each model):")
        for command in result.commands:
            click.echo(f"  {command}")
    else:
        click.echo(f"\nlabel these prompts (0-based indices of the prompts file) with every "
                   f"candidate ({', '.join(result.candidates)}) and write lm-eval sample "
                   f"logs of them into RUNS: {', '.join(map(str, result.docs))}")
    click.echo(f"\nthen: {next_steps['then']}")
    if next_steps.get("more"):
        click.echo(f"more: {next_steps['more']}")
    else:
        click.echo("more: none (this round takes the last docs of the task)")


# -- evaluate ----------------------------------------------------------------------------
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
  params   mean parameter count of the chosen models (from --models; -: unknown)
rows: one per registered decider (s1/s2/s3 = the paper's scores, s3 falls back to bma;
stack = the switch learned leave-one-task-out on the reference tasks, ours, the default;
with labels their paired accuracy differences update its predictions), s3_true_p = S3
with the true p, moe = per-input choice, bma = best model on average of the other tasks,
oracle = best model on the task; X@alpha and X@Nlabels = with random in-task labels
(mean ± std over repeats, scored on the unlabelled items), few_shot = best model on the
labels alone. The row marked * is the default decision (what recommend uses).
uncertainty check (per label count; random labels): in 90% int. = share of candidates whose
accuracy on the scored items lies in the posterior's 90% interval (honest: ~0.90); P(best)
top = the P(best) of its most probable candidate, was best = how often that one was the
best (honest: equal); Brier = sum over candidates of (P(best) - 1[best])^2; +10: said / got
= the posterior's expected gain of 10 more labels in points, and what 10 more labels gave
its choice; stack P / won = the stacked switch's P(its best beats BMA) and how often it did,
over the n (task, repeat) pairs where its best was not BMA; stack +10: said / got = the
same expected gain for the stacked switch (recommend's verdict) and what it got."""


def print_evaluation(result: Any) -> None:
    click.echo(f"strict leave-one-task-out over {result.n_tasks} tasks, {result.n_models} "
               f"models (embedder {result.settings['embedder']}, predictor "
               f"{result.settings['predictor']})")
    score = result.settings.get("target") == "score"
    if score:
        click.echo("--target score: acc (and half, 95% CI) = the chosen model's mean metric "
                   "value normalised 0-1 per metric (1 = the metric's best value in the "
                   "store), not an accuracy; the metric's own units are listed below the "
                   "table (raw)")
    header = (f"{'row':<22} {'acc':>6} {'±std':>6} {'95% CI':>13} {'half':>6} {'gap':>6} "
              f"{'gap½':>6} {'W/T/L':>11} {'ratio':>6} {'pear':>6} {'spear':>6} {'%BMA':>5} "
              f"{'params':>7} {'rank':>5}")
    click.echo(header)
    click.echo("-" * len(header))
    default = result.settings.get("default")
    for name, row in result.rows.items():
        shown = f"{name} *" if name.split("@")[0] == default else name
        params = row.get("params")
        params_text = "-" if params is None or params != params else format_params(int(params))
        ci = row.get("acc_ci")
        ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        # means over repeats in the label rows: one decimal
        wtl = "-" if row.get("wins") is None else "/".join(
            format(row[k], ".3g" if float(row[k]).is_integer() else ".1f")
            for k in ("wins", "ties", "losses"))
        click.echo(f"{shown:<22} {fmt(row['acc'], 6)} {fmt(row.get('acc_std'), 6)} "
                   f"{ci_text:>13} {fmt(row.get('acc_half'), 6)} "
                   f"{fmt(row.get('gap_closed'), 6, '.2f')} "
                   f"{fmt(row.get('gap_closed_half'), 6, '.2f')} {wtl:>11} "
                   f"{fmt(row['ratio_to_best'], 6)} {fmt(row['pearson'], 6)} "
                   f"{fmt(row['spearman'], 6)} {fmt(row['pct_bma'], 5, '.2f')} "
                   f"{params_text:>7} {fmt(row['rank'], 5, '.2f')}")
    if score:
        click.echo("\nraw (each row's mean over tasks of the chosen model's mean value, in "
                   "each metric's own units):")
        for name, row in result.rows.items():
            by_metric = row.get("acc_raw_by_metric") or {}
            click.echo(f"  {name:<22} " + ", ".join(
                f"{metric} {fmt(value, 0, '.4g')}" for metric, value in by_metric.items()))
    else:
        click.echo(f"\ncorrectness predictors on held-out tasks: accuracy "
                   f"{result.predictor_accuracy:.3f}; kernel-smoothed p: MAE "
                   f"{result.p_mae:.3f}")
    for entry in result.alpha_sweep:
        what = (f"alpha {entry['alpha']:g}" if entry.get("alpha") is not None
                else f"{entry['labels']} labels")
        click.echo(f"{what}: {entry['mean_labels']:.1f} labels per task on average" + (
            "" if score else f", predictor accuracy {entry['predictor_accuracy']:.3f}"))
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
        click.echo(f"{what:<11} {fmt(e['coverage'], 11)} {fmt(e['p_best_top'], 11)} "
                   f"{fmt(e['top_is_best'], 8)} {fmt(e['brier'], 6)} "
                   f"{fmt(said, 9, '+.2f')} {fmt(got, 6, '+.2f')} "
                   f"{fmt(e['stack_p'], 7, '.2f')} {fmt(e['stack_won'], 5, '.2f')} "
                   f"{e['stack_n']:>4} {fmt(stack_said, 15, '+.2f')} "
                   f"{fmt(stack_got, 6, '+.2f')}")



# -- pull --------------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def print_pull(result: Any) -> None:
    """What a pull fetched and stored (PullResult of lm_router_plugin.pull)."""
    f, r = result.fetch, result.ingest
    click.echo(f"{result.source}: {len(result.selected)} "
               f"{'runs' if result.source == 'helm' else '(model, task) logs'}, {f.n_files} "
               f"files: {f.n_downloaded} downloaded ({_size(f.bytes_downloaded)}), "
               f"{f.n_cached} already in the cache ({result.cache})")
    click.echo(f"{r.n_read} rows read: {r.n_added} added, {r.n_unchanged} already stored, "
               f"{r.n_replaced} replaced; {len(r.models)} models, {len(r.tasks)} tasks -> "
               f"{result.store}")


def print_embed(result: dict[str, Any]) -> None:
    """What ``lm-router embed`` did (api.embed's dict)."""
    click.echo(f"{result['n_texts']} reference texts: {result['n_embedded']} embedded, "
               f"{result['n_cached']} already cached ({result['embedder']}; "
               f"{result['seconds']:.1f} s) -> {result['store']}")
