"""The notebook catalogue: every ``notebooks/**.ipynb`` with its ``metadata.workbook`` and parameters cell.

Each notebook carries ``metadata.workbook = {"id", "title", "source", "defects": [...]}``. A notebook
without defect switches has no incident mode (it runs in fixed mode only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbook._exceptions import CatalogError
from workbook.params import ParameterError, declared_parameters

MODES = ("fixed", "incident")


@dataclass(frozen=True)
class NotebookInfo:
    """One notebook of the catalogue."""

    id: str
    title: str
    source: str
    defects: tuple[str, ...]
    path: Path
    family: str = "general"  # the folder under the notebook directory (kv, rpc, flaky); "general" at its top

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes it can run in: both, or fixed only when it has no defect switches."""
        return MODES if self.defects else ("fixed",)

    def parameters(self) -> dict[str, Any]:
        """Names and literal defaults of its ``parameters`` cell."""
        return declared_parameters(parameters_source(read_notebook(self.path), self.path))


def read_notebook(path: Path) -> dict[str, Any]:
    """The notebook JSON, or CatalogError naming the file."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: not a readable notebook: {exc}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise CatalogError(f"{path}: not a notebook (no cells)")
    return nb


def cell_source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def parameters_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """The code cells tagged ``parameters``."""
    return [c for c in nb["cells"] if c.get("cell_type") == "code"
            and "parameters" in (c.get("metadata", {}).get("tags") or [])]


def parameters_source(nb: dict[str, Any], path: Path) -> str:
    cells = parameters_cells(nb)
    if len(cells) != 1:
        raise CatalogError(f"{path}: needs exactly one code cell tagged 'parameters', found {len(cells)}")
    return cell_source(cells[0])


def info_of(path: Path, root: Path | None = None) -> NotebookInfo:
    """The catalogue entry of the notebook at *path* (its family: the first folder below *root*)."""
    meta = read_notebook(path).get("metadata", {}).get("workbook")
    if not isinstance(meta, dict):
        raise CatalogError(f"{path}: no metadata.workbook (id, title, source, defects)")
    missing = [k for k in ("id", "title", "source") if not isinstance(meta.get(k), str) or not meta.get(k)]
    if missing:
        raise CatalogError(f"{path}: metadata.workbook lacks {', '.join(missing)}")
    defects = meta.get("defects", [])
    if not isinstance(defects, list) or not all(isinstance(d, str) for d in defects):
        raise CatalogError(f"{path}: metadata.workbook.defects must be a list of defect names")
    parts = path.relative_to(root).parts if root is not None and path.is_relative_to(root) else ()
    family = parts[0] if len(parts) > 1 else "general"
    return NotebookInfo(meta["id"], meta["title"], meta["source"], tuple(defects), path, family)


def discover(directory: Path) -> list[NotebookInfo]:
    """Every notebook under *directory* (checkpoints skipped), sorted by id; ids must be unique."""
    if not directory.is_dir():
        raise CatalogError(f"notebook directory {directory} does not exist")
    found: dict[str, NotebookInfo] = {}
    for path in sorted(directory.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        info = info_of(path, directory)
        if info.id in found:
            raise CatalogError(f"{path}: id {info.id!r} is also used by {found[info.id].path}")
        found[info.id] = info
    return sorted(found.values(), key=lambda i: i.id)


def check_parameters(info: NotebookInfo) -> dict[str, Any]:
    """The declared parameters, requiring a ``mode`` parameter; CatalogError otherwise."""
    try:
        declared = info.parameters()
    except ParameterError as exc:
        raise CatalogError(f"{info.path}: {exc}") from None
    if "mode" not in declared:
        raise CatalogError(f"{info.path}: the parameters cell must declare mode = \"fixed\"")
    return declared
