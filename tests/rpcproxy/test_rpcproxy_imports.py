"""The shape of the ``rpcproxy`` package, read from its source: no import cycle between its modules (imports
under ``TYPE_CHECKING`` count: that is where the old session hid its cycle), and the WebSocket session core
free of I/O libraries, itself and through everything it imports from the package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rpcproxy.wscore

PACKAGE = Path(rpcproxy.wscore.__file__).parent
IO_FREE = ("wscore", "wsactions", "heads", "tables")
IO_LIBRARIES = {"asyncio", "aiohttp", "websockets", "uvloop"}


def imports_of(module: str) -> set[str]:
    """Every module name *module* imports, anywhere in its body (``from rpcproxy import x`` as rpcproxy.x)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "rpcproxy":
                names.update(f"rpcproxy.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {
        m: {
            n.split(".")[1] for n in imports_of(m) if n.startswith("rpcproxy.") and n.split(".")[1] in modules
        }
        for m in modules
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "active" while on the path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "active"
        for nxt in sorted(edges[module]):
            if state.get(nxt) == "active":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt, [*path, nxt])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert {"wscore", "session", "mover"} <= edges.keys()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_finder_finds_a_cycle_hidden_behind_type_checking() -> None:
    # The old shape: session imported relay and moves, which imported session for their annotations.
    assert find_cycle({"session": {"relay", "moves"}, "relay": {"session"}, "moves": set()}) == [
        "relay",
        "session",
        "relay",
    ]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_session_core_imports_no_io_library() -> None:
    edges = graph()
    reach, todo = set(), ["wscore"]
    while todo:
        module = todo.pop()
        if module not in reach:
            reach.add(module)
            todo.extend(edges[module])
    assert set(IO_FREE) <= reach  # what the core runs on, and nothing more of the package
    assert reach <= {*IO_FREE, "config", "jsonrpc", "metrics"}, reach
    for module in reach:
        used = {name.split(".")[0] for name in imports_of(module)}
        assert not used & IO_LIBRARIES, f"{module} imports {used & IO_LIBRARIES}"
    # and at run time, through third-party imports too
    probe = f"import sys, rpcproxy.wscore; print([m for m in {sorted(IO_LIBRARIES)!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
