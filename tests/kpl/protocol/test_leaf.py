"""kpl.protocol is a leaf: it imports nothing of this project outside itself."""

from __future__ import annotations

import ast
from pathlib import Path

import kpl.protocol

PACKAGE = Path(kpl.protocol.__file__).parent
OURS = ("kpl", "server", "bench", "tests", "examples")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_protocol_imports_only_itself_among_our_packages() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 3
    for path in modules:
        for name in _imports(path):
            if name.startswith("."):
                continue  # relative: inside the package
            top = name.split(".")[0]
            if top in OURS:
                assert name == "kpl.protocol" or name.startswith("kpl.protocol."), (
                    f"{path.name} imports {name}"
                )
