"""The package layout shows the flow and has no import cycle: no module imports, at module
level or inside a function, a module that (directly or through others) imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("cli", "embedding", "evaluation", "router", "store", "task")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    if rel.parts[0] == "adapters":
        parts = ["lm_router_plugin", "adapters"] + list(rel.with_suffix("").parts[1:])
    else:
        parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = list((REPO / "lm_router_plugin").rglob("*.py")) + list((REPO / "adapters").glob("*.py"))
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            # importing a.b.c runs a/__init__ and a/b/__init__ first: edges to them too
            targets += [".".join(t.split(".")[:i]) for t in list(targets)
                        for i in range(2, t.count(".") + 1)]
            # a submodule importing a sibling through its own package is no edge to it
            graph[name] |= {t for t in targets if t in modules and t != name
                            and not name.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if not state.get(nxt) and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if not state.get(node) and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    graph = _graph()
    assert len(graph) > 30  # the scan found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_layout_has_the_subpackages_of_the_flow():
    for name in SUBPACKAGES:
        assert (REPO / "lm_router_plugin" / name / "__init__.py").exists(), name
    flat = sorted(p.stem for p in (REPO / "lm_router_plugin").glob("*.py"))
    assert flat == ["__init__", "api", "errors", "progress", "registry", "settings"]
