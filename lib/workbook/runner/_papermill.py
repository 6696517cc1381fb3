"""Child process of the runner: execute one notebook through papermill
(``python -m workbook.runner._papermill SPEC``).

The runner starts this in its own process group and kills the whole tree at the notebook's time
limit; running papermill out of process is what makes a whole-run limit enforceable. Exit status: 0
executed, 1 a cell raised (one line ``ename: evalue`` on stderr), 2 papermill itself failed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any


class _HideBookkeeping(logging.Filter):
    """papermill warns about every injected name the parameters cell lacks; ours are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "unknown parameter: workbook_" not in record.getMessage()


def _ipc_kernel_manager() -> type[Any]:
    """A kernel manager whose channels are Unix sockets in this execution's private temp dir.

    Over TCP, jupyter_client picks free ports, closes them and hands them to the kernel, so kernels
    started side by side can race for one port and die before answering (jupyter_client#154); the
    runner and the test suite start many at once. Unix sockets have no ports to race for.
    """
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return os.path.join(tempfile.gettempdir(), f"kernel-{os.getpid()}")

    return IpcKernelManager


def main(spec_path: str) -> int:
    """Execute the notebook described by the JSON at *spec_path*; returns the exit status."""
    spec = json.loads(Path(spec_path).read_text())
    logging.getLogger("papermill").addFilter(_HideBookkeeping())
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            spec["input"], spec["output"], parameters=spec["parameters"], kernel_name=spec["kernel"],
            cwd=spec["cwd"], progress_bar=False, log_output=False,
            start_timeout=spec.get("start_timeout", 60), kernel_manager_class=_ipc_kernel_manager(),
        )
    except PapermillExecutionError as exc:
        sys.stderr.write(f"{exc.ename}: {exc.evalue}\n")
        return 1
    except Exception:
        traceback.print_exc()
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
