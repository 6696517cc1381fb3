"""``python -m bench [NAME ...]``: run every ``bench/bench_*.py`` module's ``main()`` in turn.

NAME selects modules by the part after ``bench_``. Exit status 0 iff every selected benchmark's
``main()`` returned 0 (or None) without raising.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path


def discover() -> list[str]:
    """The benchmark names, from the ``bench_*.py`` files next to this one."""
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    names = discover()
    unknown = [a for a in argv if a not in names]
    if unknown:
        sys.stderr.write(f"bench: error: unknown benchmark {', '.join(unknown)}; known: {', '.join(names)}\n")
        return 2
    failed = []
    for name in argv or names:
        print(f"== bench_{name} ==", flush=True)
        start = time.monotonic()
        try:
            status = importlib.import_module(f"bench.bench_{name}").main()
        except Exception:
            traceback.print_exc()
            status = 1
        print(
            f"== bench_{name}: {'ok' if not status else f'FAILED ({status})'} "
            f"in {time.monotonic() - start:.1f} s ==\n",
            flush=True,
        )
        if status:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
