"""A "replay" LM for lm-eval: fake models whose right and wrong answers follow a profile.

Each profile gives a skill per task, the probability of answering a doc correctly. Whether a
doc is answered correctly is decided deterministically by hashing (profile, task, question),
so runs are reproducible and lm-eval itself scores the answers and writes real sample logs.
The model looks the gold answer up in the task data (``task_configs/*/<task>.jsonl``),
keyed by the question text found in the prompt ``"Question: ...\\nAnswer:"``.

    python tests/lmeval_replay.py --model replay --model_args pretrained=toy/math-whiz-7b \\
        --tasks router_toy --include_path task_configs --output_path runs --log_samples

or, in-process (what tests/conftest.py and examples/make_example.py do)::

    from lmeval_replay import run_lm_eval
    run_lm_eval("replay", {"pretrained": "toy/geo-buff-7b"}, ["router_toy"],
                include_path="task_configs", output_path="runs")

Multiple choice: the chosen continuation gets log-likelihood -0.05, the others -5 or less.
Generation: the gold answer, or another doc's answer; for answers of 3 or more words (the
continuous ``token_f1`` task) a right answer keeps most words and a wrong one only a few, so
the per-sample metric takes many values in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

TASK_CONFIGS = Path(__file__).resolve().parents[1] / "task_configs"

# model id -> parameter count and skill per task (default: "*")
PROFILES: dict[str, dict[str, Any]] = {
    "toy/math-whiz-7b": {"params": 7_000_000_000, "skills": {
        "toy_arith": 0.95, "toy_units": 0.9, "toy_science": 0.6, "toy_capitals": 0.3,
        "toy_history": 0.25, "toy_cooking": 0.35, "toy_percent": 0.9, "*": 0.5}},
    "toy/geo-buff-7b": {"params": 7_000_000_000, "skills": {
        "toy_arith": 0.3, "toy_units": 0.3, "toy_science": 0.45, "toy_capitals": 0.95,
        "toy_history": 0.9, "toy_cooking": 0.55, "toy_percent": 0.3, "*": 0.5}},
    "toy/generalist-70b": {"params": 70_000_000_000, "skills": {
        "toy_arith": 0.7, "toy_units": 0.65, "toy_science": 0.75, "toy_capitals": 0.7,
        "toy_history": 0.65, "toy_cooking": 0.8, "toy_percent": 0.65, "*": 0.7}},
    "toy/tiny-1b": {"params": 1_000_000_000, "skills": {
        "toy_arith": 0.3, "toy_units": 0.2, "toy_science": 0.35, "toy_capitals": 0.3,
        "toy_history": 0.3, "toy_cooking": 0.25, "toy_percent": 0.25, "*": 0.3}},
}
ALIASES = {name.split("/")[1].rsplit("-", 1)[0]: name for name in PROFILES}  # "math-whiz" -> id
_FILLER = ["something", "else", "maybe", "stuff", "various", "things", "mixed", "items"]


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from the given strings."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def _question(context: str) -> str:
    """The question of the last "Question: ...\\nAnswer:" block of a prompt."""
    tail = context.rsplit("Question: ", 1)[-1]
    return tail[: -len("\nAnswer:")] if tail.endswith("\nAnswer:") else tail.strip()


def load_gold(task_dir: str | Path = TASK_CONFIGS) -> dict[str, dict[str, Any]]:
    """question -> {"task", "answer", "choices", "others"} for every ``*/<task>.jsonl``."""
    gold: dict[str, dict[str, Any]] = {}
    for data in sorted(Path(task_dir).glob("*/*.jsonl")):
        task = data.stem
        docs = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        answers = [str(d["answer"]) for d in docs]
        for doc in docs:
            gold[doc["question"]] = {"task": task, "answer": str(doc["answer"]),
                                     "choices": [str(c) for c in doc.get("choices") or []],
                                     "others": answers}
    return gold


@register_model("replay")
class ReplayLM(LM):
    """An LM that answers right with probability ``skill[task]`` of its profile.

    Args:
        pretrained: a profile id of :data:`PROFILES` (or its short alias, e.g. ``math-whiz``);
            the lm-eval output folder and ``model_name`` follow it.
        task_dir: folder of task data to look gold answers up in (default: task_configs/).
    """

    def __init__(self, pretrained: str = "toy/generalist-70b", task_dir: str | None = None,
                 **_: Any) -> None:
        super().__init__()
        name = ALIASES.get(pretrained, pretrained)
        if name not in PROFILES:
            raise ValueError(f"unknown replay profile {pretrained!r}; "
                             f"known: {', '.join(PROFILES)}")
        self.profile = name
        self.skills = PROFILES[name]["skills"]
        self.gold = load_gold(task_dir or TASK_CONFIGS)

    def get_model_info(self) -> dict[str, Any]:
        """Written into the results JSON ``config`` (lm-eval does the same for HF models)."""
        return {"model_num_parameters": PROFILES[self.profile]["params"]}

    def _right(self, question: str, task: str) -> bool:
        skill = self.skills.get(task, self.skills["*"])
        return _unit(self.profile, task, question) < skill

    def _mc_choice(self, question: str, entry: dict[str, Any]) -> str:
        if self._right(question, entry["task"]):
            return entry["answer"]
        wrong = [c for c in entry["choices"] if c != entry["answer"]]
        return wrong[int(_unit(self.profile, "wrong", question) * len(wrong))]

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            question = _question(context)
            entry = self.gold.get(question)
            if entry is None or not entry["choices"]:
                out.append((-1.0 - _unit(self.profile, context, continuation), False))
                continue
            chosen = continuation.strip() == self._mc_choice(question, entry).strip()
            ll = -0.05 if chosen else -5.0 - _unit(self.profile, question, continuation)
            out.append((ll, chosen))
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        return [-10.0 * _unit(self.profile, request.args[0]) for request in requests]

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return [self._generate(request.args[0]) for request in requests]

    def _generate(self, context: str) -> str:
        question = _question(context)
        entry = self.gold.get(question)
        if entry is None:
            return "I do not know"
        answer, right = entry["answer"], self._right(question, entry["task"])
        words = answer.split()
        if len(words) >= 3:  # partial credit: keep a share of the reference words
            u = _unit(self.profile, "keep", question)
            keep = round(len(words) * ((0.75 + 0.25 * u) if right else (0.4 * u)))
            kept = [w for i, w in enumerate(words) if i < keep]
            extra = [] if right else _FILLER[: max(1, len(words) - keep)]
            return " ".join(kept + extra)
        if right:
            return answer
        others = [a for a in entry["others"] if a != answer]
        return others[int(_unit(self.profile, "other", question) * len(others))]


def run_lm_eval(model: str, model_args: dict[str, Any], tasks: list[str], *,
                include_path: str | Path, output_path: str | Path,
                limit: int | None = None, num_fewshot: int | None = None) -> dict[str, Any]:
    """Run lm-eval in-process as its CLI would and write results + sample logs
    (``num_fewshot``: as ``--num_fewshot``; None keeps each task's own).

    Returns the results dict (without samples), as written to ``results_<date>.json``.
    """
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(output_path))
    results = simple_evaluate(
        model=model, model_args=dict(model_args), tasks=list(tasks),
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        log_samples=True, evaluation_tracker=tracker, limit=limit, bootstrap_iters=0,
        num_fewshot=num_fewshot)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    return results


def run_profiles(output_path: str | Path, profiles: list[str] | None = None, *,
                 tasks: tuple[str, ...] = ("router_toy",), include_path: str | Path = TASK_CONFIGS,
                 limit: int | None = None, num_fewshot: int | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Run every profile (default: all) over ``tasks``: {model id: results dict}."""
    return {name: run_lm_eval("replay", {"pretrained": name}, list(tasks),
                              include_path=include_path, output_path=output_path, limit=limit,
                              num_fewshot=num_fewshot)
            for name in (profiles or list(PROFILES))}


if __name__ == "__main__":  # the lm-eval CLI with the replay model registered
    from lm_eval.__main__ import cli_evaluate

    sys.exit(cli_evaluate())
