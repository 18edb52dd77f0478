"""The README's Python API example runs as written (on the quick-start example data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lm_router_plugin.ingest import ingest
from lm_router_plugin.store import Store

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
