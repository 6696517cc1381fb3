"""One HTML page per executed notebook, rendered by nbconvert's lab template with the workbook's bar.

The bar (``templates/nbconvert/workbook``) gives the verdict, a link back to the run index and, for an
incident, the other mode's page one click away. Figures are embedded (base64) and no script comes from
a CDN, so a page stands alone wherever the outputs folder goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_TEMPLATES = Path(__file__).resolve().parent / "templates" / "nbconvert"
_lock = threading.Lock()  # nbconvert's exporters are not documented as thread-safe


def stem(notebook_id: str, mode: str, repeat: int, repeats: int) -> str:
    """The file stem of one execution: ``kv-01.incident`` (``kv-01.incident.r2`` under ``--repeat``)."""
    return f"{notebook_id}.{mode}" + (f".r{repeat}" if repeats > 1 else "")


def bar(row: Mapping[str, Any], modes: Sequence[str], repeats: int) -> dict[str, Any]:
    """What the page's bar shows for the summary *row* of a notebook that has *modes*."""
    return {
        "id": row["id"], "title": row["title"], "mode": row["mode"], "verdict": row["verdict"],
        "message": row["message"], "log": row["paths"]["log"], "notebook": row["paths"]["notebook"] or "",
        "modes": [{"mode": m, "current": m == row["mode"],
                   "href": stem(row["id"], m, row["repeat"], repeats) + ".html"} for m in modes],
    }


def render(nb_path: Path, html_path: Path, workbook: Mapping[str, Any]) -> tuple[float, str | None]:
    """Render *nb_path* to *html_path*; returns (seconds taken, an error line or None) and never raises."""
    start = time.monotonic()
    try:
        with _lock:
            from nbconvert import HTMLExporter

            exporter = HTMLExporter(template_name="workbook", extra_template_basedirs=[str(_TEMPLATES)])
            body, _ = exporter.from_filename(str(nb_path), resources={"workbook": dict(workbook)})
        html_path.write_text(body, encoding="utf-8")
        return time.monotonic() - start, None
    except Exception as exc:
        return time.monotonic() - start, f"HTML rendering failed: {type(exc).__name__}: {exc}"
