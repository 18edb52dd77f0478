"""Thresholds eta: shipped defaults, user overrides per metric and per task, and errors."""

from __future__ import annotations

import pytest

from lm_router_plugin.errors import InputError
from lm_router_plugin.store.thresholds import Rule, Thresholds


def test_binary_metric_uses_the_value():
    rule = Thresholds.load().rule("t", "acc")
    assert rule == Rule("acc", None, True)
    assert rule.apply(1.0) == (None, 1) and rule.apply(0.0) == (None, 0)
    assert rule.apply(0.7) == (0.5, 1)  # a fractional "binary" value: thresholded at 0.5


def test_continuous_and_lower_is_better_defaults():
    th = Thresholds.load()
    assert th.rule("qa", "f1_score").apply(0.6) == (0.5, 1)
    assert th.rule("qa", "f1_score").apply(0.5) == (0.5, 0)  # strictly above eta
    assert th.rule("qa", "exact_match@5").threshold is None  # @k uses the base name
    wer = th.rule("asr", "wer_score")
    assert not wer.higher_is_better and wer.apply(0.2) == (0.5, 1) and wer.apply(0.7) == (0.5, 0)
    # the harness's own direction wins over the table
    assert not th.rule("t", "my_loss", higher_is_better=False).higher_is_better


def test_user_file_overrides(tmp_path):
    path = tmp_path / "th.yaml"
    path.write_text("metrics:\n  f1_score: 0.3\n  judge: {threshold: 7, higher_is_better: true}\n"
                    "tasks:\n  narrative_qa: {metric: rouge_l, threshold: 0.2}\n"
                    "  gsm8k: {filter: flexible-extract}\n")
    th = Thresholds.load(path)
    assert th.rule("x", "f1_score").threshold == 0.3
    assert th.rule("x", "judge").apply(8) == (7.0, 1)
    assert th.rule("narrative_qa", "rouge_l").threshold == 0.2
    assert th.rule("other", "rouge_l").threshold == 0.5
    assert th.task_metric("narrative_qa") == "rouge_l"
    assert th.task_filter("gsm8k") == "flexible-extract"


@pytest.mark.parametrize("text, match", [
    ("metrics:\n  exact_mtch: 0.5\n", r"Unknown metric 'exact_mtch'. Did you mean: exact_match"),
    ("metrics:\n  f1_score: high\n", r"metrics.f1_score: threshold must be a number"),
    ("metrics:\n  judge: {higher_is_better: true}\n", r"missing key 'threshold'"),
    ("tasks:\n  qa: {metrik: f1_score}\n", r"tasks.qa: expected a mapping with keys"),
    ("thresholds: 3\n", r"Unknown top-level key 'thresholds'. Available: metrics, tasks"),
    ("- 3\n", r"expected a mapping with top-level keys"),
    ("lower_is_better: [judge]\n", r"Unknown top-level key 'lower_is_better'.*"
                                    r"higher_is_better: false"),
    ("metric:\n  f1_score: 0.3\n", r"Unknown top-level key 'metric'. Did you mean: metrics\?"),
    ("metrics: [f1_score]\n", r"metrics: expected a mapping"),
    ("metrics:\n  judge: {threshold: 7, lower_is_better: true}\n",
     r"metrics.judge: Unknown key 'lower_is_better'. Did you mean: higher_is_better"),
    ("metrics:\n  judge: {threshold: 7, higher_is_better: maybe}\n",
     r"metrics.judge.higher_is_better: expected true or false"),
    ("metrics: [unclosed\n", r"not valid YAML"),
    ('tasks:\n  t: {higher_is_better: "false"}\n',  # a quoted "false" is truthy
     r"tasks.t.higher_is_better: expected true or false, got 'false'"),
])
def test_bad_thresholds_file(tmp_path, text, match):
    path = tmp_path / "th.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        Thresholds.load(path)
    assert str(path) in str(info.value)


def test_unknown_metric_hint_has_balanced_braces(tmp_path):
    path = tmp_path / "th.yaml"
    path.write_text("metrics:\n  judge_scor: 0.5\n")
    with pytest.raises(InputError) as info:
        Thresholds.load(path)
    message = str(info.value)
    assert "'judge_scor: {threshold: X, higher_is_better: true}'" in message
    assert message.count("{") == message.count("}")


def test_task_direction_is_a_boolean(tmp_path):
    path = tmp_path / "th.yaml"
    path.write_text("tasks:\n  t: {higher_is_better: false}\n")
    assert not Thresholds.load(path).rule("t", "my_loss").higher_is_better


def test_is_binary_follows_task_overrides(tmp_path):
    path = tmp_path / "th.yaml"
    path.write_text("tasks:\n  t: {metric: acc, threshold: 0.3}\n")
    th = Thresholds.load(path)
    assert th.is_binary("acc") and th.is_binary("acc", "other")
    assert not th.is_binary("acc", "t") and not th.is_binary("f1_score")
