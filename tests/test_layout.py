"""The package's import structure: no module cycle, and only the CLI imports the analyses.

The graph is read from the source with ``ast`` (no import runs): every ``import`` and
``from ... import`` anywhere in a module, function-level ones included, plus the lazy submodules
of the product packages (``from jaxgen import gan; gan.models`` imports ``jaxgen.gan.models``).
"""

import ast
from pathlib import Path

import jaxgen

ROOT = Path(jaxgen.__file__).parent


def _module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    """``{module name: (path, ast)}`` for every module of jaxgen."""
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in ROOT.rglob("*.py")}


def _lazy_submodules(tree):
    """Names a package's ``__getattr__ = submodules(__name__, (...))`` imports on first use."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "submodules":
            return {c.value for c in ast.walk(node.args[1]) if isinstance(c, ast.Constant)}
    return set()


def import_graph(modules=None):
    """``{module: set of jaxgen modules it imports}``."""
    modules = _modules() if modules is None else modules
    lazy = {name: _lazy_submodules(tree) for name, (_, tree) in modules.items()}
    graph = {}
    for name, (path, tree) in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges, bound = set(), {}  # bound: local name -> the module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges.add(alias.name)
                    bound[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    target = target if target in modules else base
                    edges.add(target)
                    bound[alias.asname or alias.name] = target
        for node in ast.walk(tree):  # lazy submodules used as attributes: gan.models
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module = bound.get(node.value.id)
                if module in lazy and node.attr in lazy[module]:
                    edges.add(f"{module}.{node.attr}")
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph):
    """One cycle as a list of modules ``[a, b, ..., a]``, or ``None``."""
    state, stack = {}, []  # state: 1 on the stack, 2 done

    def visit(node):
        state[node] = 1
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if state.get(succ) == 1:
                return stack[stack.index(succ) :] + [succ]
            if succ not in state:
                found = visit(succ)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_cycle_in_the_module_graph():
    graph = import_graph()
    assert {"jaxgen.rnn", "jaxgen.recurrence", "jaxgen.kernels.ops"} <= set(graph)
    assert "jaxgen.kernels" in graph["jaxgen.rnn"]  # function-level imports are seen
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_kernels_know_only_arrays():
    graph = import_graph()
    below = {"jaxgen.recurrence", "jaxgen.kernels", "jaxgen.native"}

    def within(name, packages):  # the package itself or one of its modules (not "jaxgen.nnx_...")
        return any(name == p or name.startswith(p + ".") for p in packages)

    for name, edges in graph.items():
        if within(name, ("jaxgen.kernels", "jaxgen.native", "jaxgen.recurrence", "jaxgen.nn")):
            outside = {e for e in edges if not within(e, (*below, "jaxgen.nn"))}
            assert not outside, f"{name} imports {outside}"
    assert not any(e.startswith("jaxgen.rnn") for e in graph["jaxgen.recurrence"])


def test_only_the_cli_imports_the_analyses():
    graph = import_graph()
    importers = {
        name
        for name, edges in graph.items()
        if not name.startswith("jaxgen.analysis")
        and any(e == "jaxgen.analysis" or e.startswith("jaxgen.analysis.") for e in edges)
    }
    assert importers <= {"jaxgen.cli"}, importers
