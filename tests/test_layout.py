"""The package layout shows the method: stages in data-flow order, imports flowing one way only."""
from __future__ import annotations

import ast
from pathlib import Path

import nnunet_medaka

PACKAGE = Path(nnunet_medaka.__file__).resolve().parent
# data-flow order; the shared top-level modules come before every stage
STAGES = ("conversion", "training", "quality", "pseudolabel", "pipeline", "report")
SHARED = {"nnunet_medaka", "nnunet_medaka.config", "nnunet_medaka.errors", "nnunet_medaka.environment",
          "nnunet_medaka.files", "nnunet_medaka.doctor", "nnunet_medaka.__main__", "nnunet_medaka.cli"}
# the command line sits on top of everything: it registers every stage's subcommands
ENTRY_POINTS = {"nnunet_medaka.cli", "nnunet_medaka.__main__"}


def _modules() -> dict:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str) -> list:
    """(imported module, imported names) for every import of this package anywhere in the file, lazy ones too."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("nnunet_medaka")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.startswith("nnunet_medaka"):
                out.append((module, [a.name for a in node.names]))
    return out


def _rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return 1 + STAGES.index(parts[1])
    return 0


def _stage(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_every_stage_is_a_package_in_data_flow_order():
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), f"missing stage package {stage}"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init} needs a docstring saying what the stage takes in and gives out"
        assert any(isinstance(n, (ast.Assign, ast.AnnAssign)) and "__all__" in ast.unparse(n) for n in tree.body), \
            f"{init} lists no __all__"
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "cli", "config", "doctor", "environment", "errors", "files"}, top


def test_imports_flow_from_later_stages_to_earlier_ones():
    modules = _modules()
    problems = []
    for name, path in modules.items():
        if name in ENTRY_POINTS:
            continue
        for target, names in _imports(path, name):
            if target not in modules and target.rsplit(".", 1)[0] in modules:
                target = target.rsplit(".", 1)[0]  # `from pkg import module`
            if _rank(target) > _rank(name):
                problems.append(f"{name} imports the later {target}")
            if name in SHARED and _stage(target):
                problems.append(f"shared module {name} imports the stage module {target}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != name:
                problems.append(f"{name} imports private {private} from {target}")
    assert not problems, "\n".join(problems)


def test_no_circular_imports():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target, names in _imports(path, name):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in modules and candidate != name:
                    edges.add(candidate)
                    break
        # importing a submodule runs its package's __init__, which may import its siblings: not a cycle of this
        # module's making, so package inits are left out as targets unless named directly
        graph[name] = edges
    cycles = []

    def visit(node, stack, on_stack, done):
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        on_stack.discard(node)
        stack.pop()
        done.add(node)

    done: set = set()
    for name in sorted(graph):
        if name not in done and name not in ENTRY_POINTS:
            visit(name, [], set(), done)
    assert not cycles, "\n".join(cycles)


def test_modules_stay_small_and_the_pipeline_is_written_once():
    """No module over 450 non-blank lines; ``pipeline/`` (one library of steps on one engine) at most 2,550 lines:
    2,200 when run and experiment became one, plus the self-training rounds (``rounds.py``, built from the same
    steps), plus experiment's ``pool_size`` cut of the students' pool (a view of the same pseudo-labels)."""
    sizes = {name: sum(1 for line in path.read_text().splitlines() if line.strip())
             for name, path in _modules().items()}
    assert not {n: k for n, k in sizes.items() if k > 450}
    pipeline = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "pipeline").glob("*.py"))
    assert pipeline <= 2550, f"nnunet_medaka/pipeline/ has {pipeline} lines"
