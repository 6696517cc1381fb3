"""Notebook parameters: validated up front, so a wrong value stops the run with one clear line.

The runner injects, after the notebook's ``parameters`` cell, the values it chose plus
``workbook_notebook_id``, ``workbook_sidecar`` (where the verdict goes), ``workbook_declared``
(name → type of each default in the parameters cell) and ``workbook_injected`` (the names it set).
:func:`check` then rejects an injected name the notebook does not declare and a value whose type
differs from its default's (an int is accepted for a float; a ``None`` default accepts anything).
Run by hand in JupyterLab, nothing is injected and only ``mode`` is checked.
"""

from __future__ import annotations

import ast
import time
from typing import Any

from workbook._exceptions import ParameterError

MODES = ("fixed", "incident")
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list, tuple),
    "dict": (dict,), "tuple": (list, tuple),
}




class Parameters(dict[str, Any]):
    """The notebook's parameters after :func:`check` (also readable as attributes: ``P.mode``)."""

    started_at: float = 0.0  # time.monotonic() at check
    notebook_id: str | None = None  # the notebook id (injected as ``workbook_notebook_id``)
    sidecar_path: str | None = None  # where the verdict sidecar goes (injected as ``workbook_sidecar``)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def incident(self) -> bool:
        """True in incident mode (defect switches on)."""
        return self["mode"] == "incident"

    @property
    def fixed(self) -> bool:
        return self["mode"] == "fixed"


_current: Parameters | None = None


def type_name(value: Any) -> str:
    """The type name recorded in ``workbook_declared`` for a default value."""
    if value is None:
        return "any"
    return type(value).__name__ if type(value).__name__ in _TYPES else "any"


def declared_parameters(source: str) -> dict[str, Any]:
    """Names and literal default values assigned at top level of a ``parameters`` cell's *source*.

    A default that is not a literal is recorded as ``...`` (type "any"). Raises ParameterError on a
    syntax error, naming the line.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"parameters cell does not parse: line {exc.lineno}: {exc.msg}") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                try:
                    out[target.id] = ast.literal_eval(value)
                except ValueError:
                    out[target.id] = ...
    return out


def validate(name: str, value: Any, declared_type: str) -> None:
    """Raise ParameterError unless *value* fits *declared_type* (see :data:`_TYPES`)."""
    allowed = _TYPES.get(declared_type)
    if allowed is None:
        return
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and declared_type in ("int", "float"))
    if not ok:
        raise ParameterError(f"parameter {name!r} must be {declared_type}, got {value!r} "
                             f"({type(value).__name__})")


def check(namespace: dict[str, Any]) -> Parameters:
    """Validate the injected parameters in *namespace* (the notebook's ``globals()``) and return them.

    Call it in the cell right after the ``parameters`` cell: ``P = params.check(globals())``.
    """
    global _current
    declared: dict[str, str] = namespace.get("workbook_declared") or {}
    injected: list[str] = list(namespace.get("workbook_injected") or [])
    for name in injected:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ParameterError(f"unknown parameter {name!r} (this notebook declares: {known})")
        validate(name, namespace.get(name), declared[name])
    mode = namespace.get("mode")
    if mode not in MODES:
        raise ParameterError(f"parameter 'mode' must be 'fixed' or 'incident', got {mode!r}")
    names = list(declared) if declared else [n for n in ("mode", "profile", "seed") if n in namespace]
    params = Parameters({name: namespace[name] for name in names if name in namespace})
    params.started_at = time.monotonic()
    params.notebook_id = namespace.get("workbook_notebook_id")
    params.sidecar_path = namespace.get("workbook_sidecar")
    _current = params
    return params


def current() -> Parameters | None:
    """The parameters of the last :func:`check` in this kernel (the verdict helper uses them)."""
    return _current
