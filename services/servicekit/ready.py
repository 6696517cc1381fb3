"""The ready file: JSON written atomically once a service is listening, read by the supervisor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write_ready_file(path: str | os.PathLike[str] | None, *, name: str, service: str, listen: str,
                     **endpoints: Any) -> dict[str, Any]:
    """Write ``{"name", "service", "pid", "listen", "started_at", **endpoints}`` to *path* atomically.

    ``listen`` is the bound ``HOST:PORT`` (never port 0). Returns the document; does nothing on disk when
    *path* is None.
    """
    doc = {"name": name, "service": service, "pid": os.getpid(), "listen": listen,
           "started_at": time.time(), **endpoints}
    if path is not None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, target)
    return doc
