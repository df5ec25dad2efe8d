"""Tests (repository structure): the shape issue 14 gave the code, kept by a test rather than by memory.

- no Python file of the package over 500 lines;
- no include cycle among csrc/core's files;
- no module in pixelcnn_fast/, benchmarks/ or scripts/ imports another module's underscore name (the
  compiled modules _core, _cuda, _tf_ops and the package's own _ext/_version/_build_info are modules, not
  private names, and may be imported);
- every source file's first line says which layer it belongs to.
"""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_NAMES_ALLOWED = {"_core", "_cuda", "_tf_ops", "_ext", "_version", "_build_info"}


def _files(folder, suffixes):
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.join(dirpath, f) for f in filenames if f.endswith(suffixes)]
    return sorted(out)


def test_no_package_file_over_500_lines():
    long = {os.path.relpath(p, ROOT): n for p in _files("pixelcnn_fast", (".py",))
            if (n := sum(1 for _ in open(p))) > 500}
    assert not long, f"split these (issue 14: no file in pixelcnn_fast/ over 500 lines): {long}"


def test_csrc_core_has_no_include_cycle():
    core = os.path.join(ROOT, "csrc", "core")
    graph = {}
    for path in _files("csrc/core", (".h", ".cc", ".inc")):
        name = os.path.basename(path)
        graph[name] = [m for m in re.findall(r'^#include "([^"/]+)"', open(path).read(), re.M)
                       if os.path.exists(os.path.join(core, m))]
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, []):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("include cycle in csrc/core: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert "program.h" in graph and graph["column_program.h"], "the walk saw the core's headers"


def _ours(module):
    """Is `module` (dotted) one of this repository's modules (the package, build_support, a sibling file)?"""
    top = (module or "").split(".")[0]
    return top in ("pixelcnn_fast", "build_support", "fixtures") or \
        any(os.path.exists(os.path.join(ROOT, d, top + ".py")) for d in ("benchmarks", "scripts", "tests"))


def _underscore_imports(path):
    """Underscore names of our modules this file reaches: `from ours import _x` and `ours_module._x`.
    (Keras/TF internals a lowering must read, a layer's _flatten_layers say, are not our modules' names.)"""
    tree = ast.parse(open(path).read(), path)
    bad, our_modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            our_modules |= {(a.asname or a.name).split(".")[0] for a in node.names if _ours(a.name)}
        elif isinstance(node, ast.ImportFrom) and (_ours(node.module) or node.level):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and \
                        alias.name not in MODULE_NAMES_ALLOWED:
                    bad.append(f"from {node.module} import {alias.name}")
                else:
                    our_modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in our_modules \
                and node.attr.startswith("_") and not node.attr.startswith("__") \
                and node.attr not in MODULE_NAMES_ALLOWED:
            bad.append(f"{node.value.id}.{node.attr}")
    return bad


@pytest.mark.parametrize("folder", ["pixelcnn_fast", "benchmarks", "scripts"])
def test_no_cross_module_underscore_names(folder):
    found = {os.path.relpath(p, ROOT): sorted(set(bad)) for p in _files(folder, (".py",))
             if (bad := _underscore_imports(p))}
    assert not found, f"modules reach another module's underscore names: {found}"


def test_every_source_file_names_its_layer():
    layers = ("Core", "CUDA", "Binding", "TF adapter", "Python front end", "Build", "Benchmarks", "Docs",
              "Tests", "Test", "Scripts", "Package metadata", "pixelcnn_fast", "Sampler randomness")
    missing = []
    for folder, suffixes in (("csrc", (".h", ".cc", ".cu", ".inc")), ("pixelcnn_fast", (".py",)),
                             ("build_support", (".py",))):
        for path in _files(folder, suffixes):
            first = open(path).readline().lstrip("/#\"' ").strip()
            if not first.startswith(layers):
                missing.append(f"{os.path.relpath(path, ROOT)}: {first[:60]!r}")
    assert not missing, "first line must say the file's layer: " + "; ".join(missing)
