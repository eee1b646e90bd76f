"""The package's layering: no import circle, skorch in the training code only."""

import ast
from pathlib import Path

import sklearn_deeploc

PACKAGE = Path(sklearn_deeploc.__file__).parent


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """Modules of the package and third-party roots imported anywhere in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if node.module:  # "from . import x" imports x, not the package around it
                found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return modules, graph


def _cycle(graph):
    """One import circle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_module_imports_a_module_that_imports_it_back():
    _, graph = _graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_skorch_is_imported_by_the_training_code_only():
    modules, _ = _graph()
    users = sorted(
        name
        for name, path in modules.items()
        if any(m == "skorch" or m.startswith("skorch.") for m in _imports(path))
    )
    assert len(users) <= 2 and set(users) <= {
        "sklearn_deeploc.training",
        "sklearn_deeploc.classifier",
    }


def test_cli_defines_argument_parsing_and_printing_only():
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    package_imports = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level and node.module
    }
    # Jobs come from the jobs module (and the demo, importer, fetchers, cell-table reader).
    allowed = {"_version", "jobs", "demo", "tf_import", "blocks", "datasets", "fields"}
    assert package_imports <= allowed
