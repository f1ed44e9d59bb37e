"""The layering of docs/architecture.md, checked on the source: every import (function-level ones included, since
the heavy ones are deliberately lazy) points down the stack, and no module imports itself through others.

    core (der_deploy.*, the artifact contract)  <-  backends  <-  stages (train, export, runtime, serve)
        <-  tools (evaluate, bench)  <-  cli
"""
from __future__ import annotations

import ast
from pathlib import Path

import der_deploy

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"der_deploy": "der_deploy", "backends": "der_deploy.backends", "train": "der_deploy.train",
           "export": "der_deploy.export", "runtime": "der_deploy.runtime", "serve": "der_deploy.serve",
           "tools": "der_deploy.tools"}
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "core": set(),
    "backends": {"core"},
    "train": {"core"},
    "export": {"core", "backends", "train"},  # export loads the training model to trace and to verify against it
    "runtime": {"core", "backends"},
    "serve": {"core", "backends", "runtime"},
    "tools": {"core", "backends", "train", "export", "runtime", "serve"},
    "cli": {"core", "backends", "train", "export", "runtime", "serve", "tools"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("backends", "train", "export", "runtime", "serve", "tools", "cli"):
        return parts[1]
    return "core"


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if folder == "der_deploy" and len(parts) >= 1 and parts[0] in FOLDERS:
                continue
            found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("der_deploy"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("der_deploy"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def test_modules_are_found():
    mods = modules()
    assert len(mods) > 60
    assert {"der_deploy.artifact.card", "der_deploy.backends.onnxruntime.runner", "der_deploy.serve.repository",
            "der_deploy.tools.bench", "der_deploy.export.chain", "der_deploy.cli.infer"} <= set(mods)
    assert der_deploy.__file__.startswith(str(ROOT))  # the checkout's source, not an installed copy


def test_imports_point_down_the_stack():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        src = layer_of(name)
        for target in imports_of(name, path):
            if target not in mods:
                continue  # a name imported from a module, not a module
            dst = layer_of(target)
            if dst != src and dst not in ALLOWED[src]:
                wrong.append(f"{name} ({src}) imports {target} ({dst})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    mods = modules()
    graph = {name: {t for t in imports_of(name, path) if t in mods and t != name} for name, path in mods.items()}
    # a package importing its own submodules (lazy __init__ re-exports) is not a cycle of concerns
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)
