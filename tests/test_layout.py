"""The package layout: one import name, no import circles, lower layers never import higher ones.

The import graph is read from the source (every ``import`` statement, including
the lazy ones inside functions), so a circle that only closes at run time is
caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Import name -> folder, as ``package-dir`` in pyproject.toml maps them.
PACKAGES = {
    "scalelab.kernels": ROOT / "kernels",
    "scalelab.simulations": ROOT / "simulations",
    "scalelab.report": ROOT / "reports",
    "scalelab.cli": ROOT / "scalelab" / "cli",
    "scalelab.bench": ROOT / "scalelab" / "bench",
}

#: Layers from low to high; a module may import only its own layer and lower ones.
LAYERS = {
    "scalelab.kernels": 0,
    "scalelab.simulations": 1,
    "scalelab.bench": 1,
    "scalelab.report": 2,
    "scalelab.cli": 3,
}


def _modules() -> dict[str, Path]:
    found = {"scalelab": ROOT / "scalelab" / "__init__.py"}
    for name, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([name, *parts])] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The scalelab modules ``path`` imports (a package import counts as its ``__init__``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, known) - {name} for name, path in mods.items()}


def _layer(module: str) -> int | None:
    for prefix, level in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodule is not a circle
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_lower_layers_never_import_higher_ones():
    bad = [
        f"{src} imports {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if _layer(src) is not None and _layer(dst) is not None and _layer(dst) > _layer(src)
    ]
    assert not bad, bad


def test_no_code_uses_the_old_top_level_names():
    roots = ["kernels", "simulations", "reports", "scalelab", "tests", "asv_benchmarks", "tools"]
    offenders = []
    for root in roots:
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                              if n.split(".")[0] in ("kernels", "simulations", "reports")]
    assert not offenders, offenders


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported first in a fresh interpreter: an import-order dependency fails here.

    One interpreter per module (~0.8 s of CPU each, ~100 modules); as many run
    at once as there are cores, which changes nothing a single import sees.
    """
    names = sorted(n for n in _modules() if not n.endswith("__main__"))
    code = (
        "import os, subprocess, sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "def check(name):\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    return name + ': ' + (r.stderr.strip().splitlines() or ['?'])[-1] if r.returncode else None\n"
        "with ThreadPoolExecutor(os.cpu_count() or 1) as pool:\n"
        "    bad = [b for b in pool.map(check, sys.argv[1:]) if b]\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
