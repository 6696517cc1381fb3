"""Every committed notebook follows the conventions of docs/notebooks.md (fixture notebooks too).

No outputs or execution counts, exactly one ``parameters`` cell (the first code cell, declaring
``mode``), a kernelspec, ``metadata.workbook``, a parameter check and a verdict. Passes with zero
notebooks under notebooks/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workbook.params import declared_parameters
from workbook.runner import catalog, profiles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIXTURES = ROOT / "tests" / "fixtures" / "notebooks"


def all_notebooks() -> list[Path]:
    found = [p for d in (NOTEBOOKS, FIXTURES) if d.is_dir() for p in sorted(d.rglob("*.ipynb"))]
    return [p for p in found if ".ipynb_checkpoints" not in p.parts]


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_follows_conventions(path: Path) -> None:
    nb = catalog.read_notebook(path)
    code = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path}: code cells {dirty} have outputs or execution counts (clear them)"
    spec = nb.get("metadata", {}).get("kernelspec", {})
    assert spec.get("name"), f"{path}: no metadata.kernelspec"
    info = catalog.info_of(path)  # raises with a clear line if metadata.workbook is missing or wrong
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", info.id), f"{path}: id {info.id!r} is not kebab-case"
    cells = catalog.parameters_cells(nb)
    assert len(cells) == 1, f"{path}: needs exactly one code cell tagged 'parameters', found {len(cells)}"
    assert cells[0] is code[0], f"{path}: the parameters cell must be the first code cell"
    declared = declared_parameters(catalog.cell_source(cells[0]))
    assert declared.get("mode") == "fixed", f"{path}: the parameters cell must declare mode = \"fixed\""
    sources = "\n".join(catalog.cell_source(c) for c in code)
    assert re.search(r"params\.check\(globals\(\)\)", sources), f"{path}: no params.check(globals())"
    assert re.search(r"\bconclude\(", sources), f"{path}: no verdict (workbook.verdict.conclude)"
    deep = re.findall(r"^\s*(?:from|import)\s+(workbook\.[\w.]+)", sources, re.M)
    assert not deep, f"{path}: imports {sorted(set(deep))}; notebooks import `from workbook import ...` only"


def test_the_public_api_names_resolve_and_the_runner_stays_private() -> None:
    """Every name of ``workbook.__all__`` resolves; none of them is runner machinery."""
    import workbook

    for name in workbook.__all__:
        value = getattr(workbook, name)
        home = getattr(value, "__module__", None) or getattr(value, "__name__", "")
        assert not str(home).startswith("workbook.runner"), name
    assert "runner" not in workbook.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        workbook.nope  # noqa: B018


def test_notebook_ids_are_unique() -> None:
    for directory in (NOTEBOOKS, FIXTURES):
        if directory.is_dir():
            catalog.discover(directory)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "parameters").glob("*.yaml")))
def test_profile_sections_name_declared_parameters(name: str) -> None:
    profile = profiles.load(name)
    infos = {i.id: i for i in catalog.discover(NOTEBOOKS)} if NOTEBOOKS.is_dir() else {}
    for nb_id, section in profile.notebooks.items():
        assert nb_id in infos, f"{profile.path}: section for unknown notebook {nb_id!r}"
        declared = infos[nb_id].parameters()
        unknown = set(section) - set(declared) - set(profiles.RUNNER_KEYS)
        assert not unknown, f"{profile.path}: notebooks.{nb_id} sets undeclared {sorted(unknown)}"
