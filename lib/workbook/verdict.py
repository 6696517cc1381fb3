"""The verdict of a notebook: assert what the mode demands and write the JSON sidecar the runner reads.

In ``incident`` mode the notebook passes iff the incident's symptom was observed; in ``fixed`` mode iff
the invariant the bug broke holds. The sidecar (path injected by the runner as ``workbook_sidecar``) is
written *before* the assertion, so a failed verdict still reports its figures.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from workbook import params as _params
from workbook._exceptions import VerdictError


def _jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts as JSON can hold them (numpy/pandas scalars via ``item()``)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


def conclude(*, symptom: bool, symptom_text: str, invariant: bool | None = None,
             invariant_text: str | None = None, figures: dict[str, Any] | None = None,
             params: _params.Parameters | None = None) -> dict[str, Any]:
    """Record and assert the verdict; returns the sidecar document.

    *symptom*: the incident's symptom was observed in this run (described by *symptom_text*, e.g.
    "acknowledged writes lost after restart"). *invariant*: the invariant holds (described by
    *invariant_text*); defaults to ``not symptom`` (fixed mode then asserts the symptom is absent).
    *figures*: the key numbers shown in the summary.
    Raises :class:`VerdictError` ("the incident did not reproduce: ..." / "the invariant does not
    hold: ...") when the mode's expectation fails.
    """
    p = params if params is not None else _params.current()
    if p is None:
        raise VerdictError("call workbook.params.check(globals()) after the parameters cell first")
    symptom = bool(symptom)
    holds = (not symptom) if invariant is None else bool(invariant)
    invariant_text = invariant_text or f"not: {symptom_text}"
    figures = _jsonable(figures or {})
    if p.incident:
        passed = symptom
        message = "" if passed else f"the incident did not reproduce: expected {symptom_text}"
    else:
        passed = holds
        broken = invariant_text if invariant is not None else f"observed {symptom_text}"
        message = "" if passed else f"the invariant does not hold: {broken}"
    if message and figures:
        message += "; " + ", ".join(f"{k}={v}" for k, v in figures.items())
    doc = {
        "notebook": p.notebook_id,
        "mode": p["mode"],
        "passed": passed,
        "reproduced": symptom,
        "invariant_holds": holds,
        "symptom": symptom_text,
        "invariant": invariant_text,
        "message": message,
        "figures": figures,
        "duration": round(time.monotonic() - p.started_at, 3),
        "parameters": _jsonable(dict(p)),
        "seed": _jsonable(p.get("seed")),
        "written_at": time.time(),
    }
    if p.sidecar_path:
        path = Path(p.sidecar_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, path)
    _display(doc)
    if not passed:
        raise VerdictError(message)
    return doc


def _display(doc: dict[str, Any]) -> None:
    word = "PASS" if doc["passed"] else "FAIL"
    what = "reproduced" if doc["reproduced"] else "not reproduced"
    print(f"{word} ({doc['mode']} mode): symptom {what}: {doc['symptom']}; "
          f"invariant {'holds' if doc['invariant_holds'] else 'broken'}")
    for key, value in doc["figures"].items():
        print(f"  {key}: {value}")


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The sidecar at *path*, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
