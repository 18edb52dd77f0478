"""The README as written: its Python API example runs (on the quick-start example data) and its
printed quick-start recommend output is what the CLI prints today."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lm_router_plugin.store.ingest import ingest
from lm_router_plugin.store.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_python_api_example(tmp_path, capsys):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert 'Store("/tmp/lm-router-quickstart")' in code
    store = tmp_path / "store"
    ingest("lm-eval", [REPO / "examples" / "runs"], Store(store),
           models_file=REPO / "examples" / "models.yaml")
    exec(code.replace("/tmp/lm-router-quickstart", str(store)), {})
    out = capsys.readouterr().out.split("\n")
    assert out[0].split()[0] in {"toy/math-whiz-7b", "toy/generalist-70b", "toy/geo-buff-7b",
                                 "toy/tiny-1b"}
    assert len(out) >= 6  # choice line, 4 model lines, route line


@pytest.mark.slow
def test_quick_start_recommend_output_is_what_the_readme_shows(tmp_path):
    """The README's printed recommend output (quick start) is what the CLI prints on the
    shipped example today: a change of the numbers or the wording fails here."""
    from click.testing import CliRunner

    from lm_router_plugin.cli.commands import main

    readme = (REPO / "README.md").read_text()
    shown = re.search(r"`recommend` prints .*?\n```\n(.*?)```", readme, re.S).group(1)
    store = tmp_path / "store"
    ingest("lm-eval", [REPO / "examples" / "runs"], Store(store),
           models_file=REPO / "examples" / "models.yaml")
    result = CliRunner().invoke(main, ["recommend", "--task", "toy_percent", "--include-path",
                                       str(REPO / "task_configs"), "--store", str(store)])
    assert result.exit_code == 0, result.output
    lines = shown.strip("\n").split("\n")
    printed = [line for line in result.stdout.split("\n")
               if not line.startswith(("INFO", "WARNING"))]
    start = printed.index(lines[0])
    assert printed[start:start + len(lines)] == lines
