"""A few labels of a new task: which docs to label, and reading the labels back.

* :func:`task_docs`: the docs of a new task in the order ``recommend`` scores them (lm-eval
  task: its leaf tasks sorted by name, each in doc order; a prompts file: its prompts), with
  the map from (leaf task, lm-eval ``doc_id``) to that order.
* :func:`stratified_sample`: the docs ``plan-labels`` asks to label: a seeded random
  sample, stratified over the leaf tasks (planning labels on the leading models'
  predicted disagreement was measured no better than random, docs/results.md).
* :class:`LabelPlan` files (``PREFIX.plan.json``): which docs were planned in which round,
  and lm-eval's ``--samples`` file (``PREFIX.samples.json``, ``{"task": [doc indices]}``).
* :func:`labelled_matrix`: the labelled rows of ``--labeled`` sample logs as a (docs, models)
  correctness matrix on that order.
* :func:`posterior`: the posterior of estimate.py for a task, with the report ``recommend``
  prints (estimated accuracy, 90% interval, P(best), labels per model, expected gain).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..store.schema import CORRECT, INSTANCE_ID, MODEL, ORIGIN, TASK

logger = logging.getLogger(__name__)

PLAN_FORMAT = "lm-router-plan"
PLAN_VERSION = 2  # 2: no inclusion probabilities (random stratified draws)
GAIN_LABELS = (10, 30)  # "expected gain of N more labels" is reported for these N
WORTH_IT = 0.005  # more labels are worth it when 10 more are expected to add >= 0.5 points
INTERVAL = 0.9


# -- the docs of a task ------------------------------------------------------------------
@dataclass
class TaskDocs:
    """The docs of a new task in scoring order. ``leaves``: [(leaf task name, n docs)] in
    order (one entry named after the file for a prompts file); ``texts`` (N,); ``docs``
    (N,): an lm-eval task's doc dicts (None otherwise), to check that a labelled sample
    log's doc is the task's doc at its ``doc_id``; ``include_path``: the task's
    ``--include-path`` as given."""

    name: str
    kind: str  # "lm-eval" or "prompts"
    leaves: list[tuple[str, int]]
    texts: list[str]
    docs: list[Any] | None = None
    include_path: str | None = None
    # sample logs whose docs were found to match (check_labelled runs more than once)
    checked: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.texts)

    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for leaf, size in self.leaves:
            out[leaf] = start
            start += size
        return out

    def index(self, leaf: str, doc_id: int) -> int | None:
        """Position of (leaf, doc_id) in scoring order; None outside the docs."""
        sizes = dict(self.leaves)
        if leaf not in sizes or not 0 <= doc_id < sizes[leaf]:
            return None
        return self.offsets()[leaf] + doc_id

    def samples(self, docs: np.ndarray) -> dict[str, list[int]]:
        """lm-eval's ``--samples`` mapping {leaf task: sorted doc indices} for positions
        ``docs``. Sorted: lm-eval 0.4.13 logs ``doc_id = indices[k]`` for the k-th selected
        doc in dataset order, which is the true index only if the list is sorted."""
        out: dict[str, list[int]] = {}
        start = 0
        docs = np.asarray(docs)
        for leaf, size in self.leaves:
            mine = docs[(docs >= start) & (docs < start + size)] - start
            if len(mine):
                out[leaf] = sorted(int(i) for i in mine)
            start += size
        return out


def task_docs(task: str | None = None, include_path: str | Path | None = None, *,
              limit: int | None = None, prompts_file: str | Path | None = None) -> TaskDocs:
    """The docs of an lm-eval task (or group) or of a prompts file, in scoring order."""
    from .docs import read_prompts_file, task_leaves

    if prompts_file is not None:
        texts = read_prompts_file(prompts_file)
        return TaskDocs(Path(prompts_file).stem, "prompts", [(Path(prompts_file).stem,
                                                              len(texts))], texts)
    leaves = task_leaves(task, include_path, limit=limit)
    return TaskDocs(task, "lm-eval", [(leaf, len(texts)) for leaf, texts, _ in leaves],
                    [t for _, texts, _ in leaves for t in texts],
                    docs=[d for _, _, docs in leaves for d in docs],
                    include_path=str(include_path) if include_path else None)


# -- plan files --------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class LabelPlan:
    """The content of ``PREFIX.plan.json`` (every round so far).

    docs: planned doc positions over all rounds; rounds: one dict per round (its docs, seed,
    how many were asked for, how many docs were labelled before it, its samples file).
    """

    task: str
    kind: str
    include_path: str | None
    limit: int | None
    leaves: list[tuple[str, int]]
    n_docs: int
    docs: list[int] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    lm_router_version: str = ""
    output_path: str | None = None  # where the lm_eval lines write (the same every round)

    @property
    def n(self) -> int:
        return len(self.docs)

    def to_dict(self) -> dict[str, Any]:
        out = {"format": PLAN_FORMAT, "version": PLAN_VERSION}
        out.update(asdict(self))
        out["leaves"] = [{"task": leaf, "n_docs": size} for leaf, size in self.leaves]
        out["n"] = self.n
        return out

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file renamed into place): an interrupted save
        leaves the previous plan intact."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)

    def add_round(self, docs: np.ndarray, *, seed: int, requested: int, n_labelled: int,
                  samples_file: str) -> None:
        self.docs = sorted(set(self.docs) | {int(i) for i in docs})
        self.rounds.append({"round": len(self.rounds) + 1, "created": _now(), "seed": seed,
                            "n": int(requested), "docs": [int(i) for i in docs],
                            "labelled_before": int(n_labelled), "samples_file": samples_file})


def stratified_sample(leaves: list[tuple[str, int]], n: int, exclude: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``n`` docs drawn at random without replacement from those not
    ``exclude``d (N,) bool, stratified over the leaf tasks ``leaves`` [(name, size)]: each
    leaf gets its share of n in proportion to its available docs (largest remainders, ties
    broken at random), so a group task's subtasks are all represented."""
    bounds = np.cumsum([0] + [size for _, size in leaves])
    free = [np.flatnonzero(~exclude[lo:hi]) + lo for lo, hi in zip(bounds[:-1], bounds[1:])]
    sizes = np.array([len(f) for f in free], dtype=float)
    n = int(min(n, sizes.sum()))
    if n == 0:
        return np.empty(0, dtype=np.int64)
    quota = n * sizes / sizes.sum()
    take = np.floor(quota).astype(int)
    left = n - int(take.sum())
    if left:
        order = np.lexsort((rng.random(len(sizes)), -(quota - take)))
        take[order[:left]] += 1
    picked = [rng.choice(f, size=k, replace=False) for f, k in zip(free, take) if k > 0]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def load_plan(path: str | Path, docs: TaskDocs) -> LabelPlan:
    """Read a plan file and check that it belongs to ``docs``'s task."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot read the plan: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from exc
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise InputError(path, "not an lm-router plan file (no \"format\": "
                         f"\"{PLAN_FORMAT}\")", hint="pass the PREFIX.plan.json that "
                         "'lm-router plan-labels' wrote, not the samples file")
    try:
        plan = LabelPlan(
            task=str(data["task"]), kind=str(data["kind"]), include_path=data["include_path"],
            limit=data["limit"], leaves=[(str(x["task"]), int(x["n_docs"]))
                                         for x in data["leaves"]],
            n_docs=int(data["n_docs"]), docs=[int(i) for i in data["docs"]],
            rounds=list(data["rounds"]),
            created=str(data.get("created", "")),
            lm_router_version=str(data.get("lm_router_version", "")),
            output_path=data.get("output_path"))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"malformed plan file ({type(exc).__name__}: {exc})") from exc
    if plan.kind != docs.kind:
        made, now = (("an lm-eval task", "a prompts file (--prompts)") if plan.kind ==
                     "lm-eval" else ("a prompts file", "an lm-eval task (--task)"))
        raise InputError(path, f"the plan was made for {made} ('{plan.task}'), not {now}",
                         hint="pass the plan made for these docs, or none")
    if plan.task != docs.name:
        raise InputError(path, f"the plan is for task '{plan.task}', not '{docs.name}'",
                         hint="pass the plan made for this task, or none")
    if docs.kind == "lm-eval" and not _same_folder(plan.include_path, docs.include_path):
        raise InputError(path, f"the plan was made with --include-path "
                         f"{plan.include_path or '(none)'}, not "
                         f"{docs.include_path or '(none)'}: another folder may hold another "
                         f"version of task '{docs.name}'",
                         hint="pass the --include-path of the plan, or plan anew with --out")
    if plan.leaves != docs.leaves or plan.n_docs != docs.n:
        raise InputError(path, f"the plan was made for {plan.n_docs} docs "
                         f"({_leaves_text(plan.leaves)}), the task now has {docs.n} "
                         f"({_leaves_text(docs.leaves)})",
                         hint="use the same --limit and task files as when planning")
    rounds = [r.get("docs") for r in plan.rounds if isinstance(r, dict)]
    for where, ids in [("docs", plan.docs)] + [(f"round {k} docs", d) for k, d in
                                                enumerate(rounds, 1) if isinstance(d, list)]:
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < plan.n_docs]
        if bad:
            raise InputError(path, f"'{where}' holds {bad[0]!r}, not a doc index in "
                             f"[0, {plan.n_docs})", hint="the plan file was edited or "
                             "damaged: plan anew with --out, or restore it")
    return plan


def _same_folder(a: str | None, b: str | None) -> bool:
    """Whether two --include-path values name the same folder (both None: the same)."""
    if a is None or b is None:
        return a is b
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def plan_coverage(plan: LabelPlan, lab_docs: np.ndarray, lab_y: np.ndarray,
                  models: list[str]) -> str:
    """One line on how far the labels cover the plan: how many planned docs have labels, by
    how many candidates each, and how many labelled docs lie outside the plan."""
    planned = np.asarray(plan.docs, dtype=np.int64)
    has = np.isin(planned, lab_docs)
    outside = int((~np.isin(lab_docs, planned)).sum())
    per_doc = (~np.isnan(lab_y)).sum(1) if len(lab_y) else np.zeros(0, int)
    runs = per_doc[np.isin(lab_docs, planned)]
    text = (f"{int(has.sum())} of the plan's {len(planned)} docs have labels"
            + (f" (from {int(runs.min())} to {int(runs.max())} of {len(models)} models each)"
               if len(runs) else ""))
    if has.sum() < len(planned):
        text += "; run the remaining lm_eval lines of plan-labels for the others"
    if outside:
        text += f"; {outside} labelled docs are not in the plan (they count all the same)"
    return text


def _leaves_text(leaves: list[tuple[str, int]]) -> str:
    return ", ".join(f"{leaf}: {size}" for leaf, size in leaves)


def new_plan(docs: TaskDocs, include_path: str | Path | None, limit: int | None) -> LabelPlan:
    from .. import __version__

    return LabelPlan(task=docs.name, kind=docs.kind,
                     include_path=str(include_path) if include_path else None, limit=limit,
                     leaves=list(docs.leaves), n_docs=docs.n, created=_now(),
                     lm_router_version=__version__)


def lm_eval_commands(models: list[str], samples: dict[str, list[int]], samples_file: Path,
                     output_path: Path, include_path: str | Path | None) -> list[str]:
    """One ``lm_eval`` command line per model (Hugging Face backend; model id as stored)."""
    out = []
    for model in models:
        args = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={model}",
                "--tasks", ",".join(samples)]
        if include_path:
            args += ["--include_path", str(include_path)]
        args += ["--samples", str(samples_file), "--log_samples", "--output_path",
                 str(output_path)]
        out.append(" ".join(shlex.quote(a) for a in args))
    return out


# -- labelled rows -> (docs, models) -----------------------------------------------------
def labelled_matrix(rows: pd.DataFrame | None, docs: TaskDocs, models: list[str]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(doc positions (L,), correctness (L, M) with nan where a model has no label) of the
    ``--labeled`` rows. lm-eval logs a doc's index in its task as ``doc_id``, which the
    adapter stores as ``instance_id``; a prompts file's rows use the prompt index.

    Raises:
        InputError: a row of another task, or a doc outside the task's docs.
    """
    M = len(models)
    if rows is None or rows.empty:
        return np.empty(0, dtype=np.int64), np.empty((0, M))
    positions = check_labelled(rows, docs)
    col = {m: j for j, m in enumerate(models)}
    known = rows[MODEL].isin(models).to_numpy()
    order = np.unique(positions[known])
    Y = np.full((len(order), M), np.nan)
    where = np.searchsorted(order, positions[known])
    Y[where, [col[m] for m in rows.loc[known, MODEL]]] = rows.loc[known, CORRECT].to_numpy(float)
    return order.astype(np.int64), Y


def check_labelled(rows: pd.DataFrame, docs: TaskDocs) -> np.ndarray:
    """(len(rows),) doc position of each ``--labeled`` row; raises InputError (naming the
    file) for a row of another task, a doc outside the task's docs, or (an lm-eval task) a
    logged doc that is not the task's doc at its ``doc_id`` (naming the line). Cheap: run it
    before fitting or embedding (each sample log is read once per TaskDocs)."""
    sizes = dict(docs.leaves)
    if ORIGIN not in rows.columns:  # rows made in Python, not read from sample logs
        rows = rows.assign(**{ORIGIN: "--labeled"})
    tasks = sorted(set(rows[TASK]))
    if docs.kind == "prompts":
        if len(tasks) > 1:
            raise InputError(rows[ORIGIN].iloc[0], f"--labeled rows hold several tasks "
                             f"({', '.join(tasks)}); with --prompts pass the runs of one task")
        leaf_of = {tasks[0]: docs.leaves[0][0]}
    else:
        other = [t for t in tasks if t not in sizes]
        if other:
            origin = rows.loc[rows[TASK] == other[0], ORIGIN].iloc[0]
            raise InputError(origin, f"--labeled: holds task '{other[0]}', not "
                             f"'{docs.name}' ({', '.join(sizes)})",
                             hint="pass only the sample logs of the task being recommended for")
        leaf_of = {t: t for t in tasks}
    out = np.empty(len(rows), dtype=np.int64)
    for k, (task, iid, origin) in enumerate(zip(rows[TASK], rows[INSTANCE_ID], rows[ORIGIN])):
        try:
            doc_id = int(iid)
        except ValueError:
            doc_id = -1
        pos = docs.index(leaf_of[task], doc_id)
        if pos is None:
            raise InputError(origin, f"--labeled: doc {iid!r} of task '{task}' is not among "
                             f"its {sizes.get(leaf_of[task], docs.n)} docs",
                             hint="use the same --limit / prompts as the labelled runs")
        out[k] = pos
    if docs.docs is not None:  # an lm-eval task: its docs against the logged ones
        for origin, group in rows.groupby(ORIGIN, sort=False):
            if str(origin) not in docs.checked and group[TASK].nunique() == 1:
                _check_docs_match(Path(str(origin)), leaf_of[group[TASK].iloc[0]], docs)
    return out


def _check_docs_match(path: Path, leaf: str, docs: TaskDocs) -> None:
    """Raise InputError (naming the file, the line and the doc_id) where a sample log's
    ``doc`` (else its ``doc_hash``) is not the task's doc at that ``doc_id``: logs of another
    version of the task (its data reordered or changed) would be joined to the wrong docs.
    A log without either, or that is not a JSON / JSONL file, is not checked."""
    if docs.docs is None or not path.is_file() or path.suffix not in (".json", ".jsonl"):
        return
    start, size = docs.offsets()[leaf], dict(docs.leaves)[leaf]
    seen: set[Any] = set()
    for line, where, rec in _log_records(path):
        doc_id = rec.get("doc_id") if isinstance(rec, dict) else None
        if type(doc_id) not in (int, str):  # the adapter skipped or refused the line
            continue
        try:
            index = int(doc_id)
        except ValueError:
            continue
        if doc_id in seen or not 0 <= index < size:  # one line per filter; range: checked
            continue
        seen.add(doc_id)
        differs = _doc_difference(rec, docs.docs[start + index])
        if differs:
            raise InputError(path, f"{where}--labeled: doc_id {doc_id} is another doc than "
                             f"doc {index} of task '{leaf}' ({differs}): the logs come from "
                             "another version of the task (its data changed or was "
                             "reordered since they were run)", line=line,
                             hint="re-run lm-eval on the current task files, or pass the "
                                  "--include-path the runs were made with")
    docs.checked.add(str(path))


def _log_records(path: Path) -> Any:
    """(line or None, "" or "sample K of the JSON array: ", record) of a JSONL or JSON-array
    sample log (the adapter read it before: a line it could not read ends the check)."""
    with open(path, "rb") as fh:
        head = fh.read(256).lstrip()
        fh.seek(0)
        try:
            if head.startswith(b"["):
                for k, rec in enumerate(json.load(fh), 1):
                    yield None, f"sample {k} of the JSON array: ", rec
                return
            for number, raw in enumerate(fh, 1):
                if raw.strip():
                    yield number, "", json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return


def _canonical(value: Any) -> str:
    """A value as lm-eval logs it (its JSON, non-JSON types as lm-eval writes them), keys
    sorted: a logged doc and the task's doc compare equal when lm-eval logged that doc."""
    try:
        from lm_eval.utils import handle_non_serializable as default
    except ImportError:  # pragma: no cover - docs are built by lm-eval
        default = str
    logged = json.loads(json.dumps(value, default=default, ensure_ascii=False))
    return json.dumps(logged, sort_keys=True, ensure_ascii=False)


def _doc_difference(rec: dict[str, Any], doc: Any) -> str:
    """How a sample log line's doc differs from ``doc`` ("" when it is the same, or the line
    carries neither ``doc`` nor ``doc_hash``)."""
    logged = rec.get("doc")
    if logged is not None:
        if _canonical(logged) == _canonical(doc):
            return ""
        if isinstance(logged, dict) and isinstance(doc, dict):
            for key in list(logged) + [k for k in doc if k not in logged]:
                if key not in logged or key not in doc or \
                        _canonical(logged[key]) != _canonical(doc[key]):
                    return (f"logged {key}={_short(logged.get(key, _ABSENT))}, the task's "
                            f"{_short(doc.get(key, _ABSENT))}")
        return f"logged doc {_short(logged)}, the task's {_short(doc)}"
    digest = rec.get("doc_hash")
    if isinstance(digest, str) and len(digest) == 64:
        from lm_eval.utils import handle_non_serializable, hash_string

        # lm-eval's own doc_hash (evaluator.py): the sha256 of the doc's indented JSON
        mine = hash_string(json.dumps(doc, indent=2, default=handle_non_serializable,
                                      ensure_ascii=False))
        return "" if mine == digest else "its doc_hash is not the task doc's"
    return ""


_ABSENT = object()


def _short(value: Any, width: int = 40) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value, ensure_ascii=False,
                                                          default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- the posterior report ----------------------------------------------------------------
@dataclass
class PosteriorReport:
    """What ``recommend`` reports beside its decision (accuracy units in [0, 1])."""

    estimates: list[dict[str, Any]]  # {model, acc, low, high, p_best, n_labels}, best first
    expected_gain: dict[str, float]  # {"10": gain, "30": gain}
    n_labelled_docs: int
    verdict: str


def posterior(cal: Any, g: np.ndarray, models: list[str], allowed: np.ndarray, *,
              lab_docs: np.ndarray, lab_y: np.ndarray, seed: int, gains: bool = True
              ) -> tuple[Any, PosteriorReport]:
    """The estimate.py posterior of the task's accuracy per model and its report (a
    report only: the decision is a decider's).

    Args:
        cal: the router's calibration.
        g: (N, M) zero-label predicted correctness of every doc of the task.
        lab_docs, lab_y: labelled doc positions (L,) and their correctness (L, M).
        seed: seeds P(best) and the expected gains (Monte Carlo).
        gains: compute the expected gain of more labels and its verdict (False: left empty,
            for a decision that reports its own).
    """
    from ..router.estimate import estimate

    if len(lab_docs):
        est = estimate(cal, g, allowed, lab_g=g[lab_docs], lab_y=lab_y)
    else:
        est = estimate(cal, g, allowed)
    p_best = est.p_best(np.random.default_rng(seed))
    interval = est.interval(INTERVAL)
    rows = [{"model": m, "acc": float(est.mean[i]), "low": float(interval[i, 0]),
             "high": float(interval[i, 1]), "p_best": float(p_best[i]),
             "n_labels": int(est.n_labels[i])}
            for i, m in enumerate(models) if allowed[i]]
    rows.sort(key=lambda r: (-r["acc"], r["model"]))
    # The expected gain is >= 0 in theory (E max >= max E); a small negative value is Monte
    # Carlo noise of estimate.expected_gain, reported as 0.
    expected = {str(n): max(0.0, float(est.expected_gain(n, np.random.default_rng([seed, n]))))
                for n in GAIN_LABELS} if gains else {}
    return est, PosteriorReport(
        estimates=rows, expected_gain=expected, n_labelled_docs=int(len(lab_docs)),
        verdict=verdict(expected, by="label posterior") if gains else "")


STACK_GAIN_SOURCE = "stacked switch, measured leave-one-task-out on the reference tasks"


def stack_gain_verdict(router: Any, allowed: np.ndarray, n_labels: int
                       ) -> tuple[dict[str, float], str]:
    """({"10": x, "30": y}, verdict): how much more the stacked switch gains over BMA with
    N more labels per candidate than with ``n_labels`` (accuracy units, may be < 0): the
    difference of the switches' leave-one-task-out gains on the reference tasks
    (``Switch.expected_gain``; measured, not modelled)."""
    base = router.stacked_switch(allowed, n_labels).expected_gain
    gains = {str(n): float(router.stacked_switch(allowed, n_labels + n).expected_gain - base)
             for n in GAIN_LABELS}
    return gains, verdict(gains, by=STACK_GAIN_SOURCE)


def verdict(gains: dict[str, float | None], by: str = "", left: int | None = None) -> str:
    """One line: are more labels worth it? (rule: 10 more per candidate are expected to
    raise the accuracy of the final choice by >= 0.5 points). ``by``: whose expectation.
    ``left``: docs of the task still unlabelled, where fewer than 30 (a count beyond it has
    gain None: not possible)."""
    if left is not None and left < GAIN_LABELS[-1]:
        shown = [(n, gains[str(n)]) for n in GAIN_LABELS if gains.get(str(n)) is not None]
        if not shown:
            return f"only {left} docs of the task are left to label (fewer than 10)"
        n, g = shown[-1]
        return (f"expected gain of {n} more labels per candidate: {100 * g:+.2f} points"
                f"{f' ({by})' if by else ''}; only {left} docs of the task are left to label "
                f"-> {'worth it' if g >= WORTH_IT else 'not worth it'}")
    g10, g30 = gains[str(GAIN_LABELS[0])], gains[str(GAIN_LABELS[1])]
    source = f" ({by})" if by else ""
    if math.isnan(g10) or math.isnan(g30):
        return (f"expected gain of more labels: not measurable{source} (it needs at least 2 "
                "reference tasks)")
    text = (f"expected gain of 10 more labels per candidate: {100 * g10:+.2f} points, of 30: "
            f"{100 * g30:+.2f} points{source} -> ")
    if g10 >= WORTH_IT:
        return text + "worth it (10 more add >= 0.5 points)"
    if g30 >= WORTH_IT:
        return text + "only with 30 more (10 more add < 0.5 points)"
    return text + "not worth it (even 30 more add < 0.5 points)"
