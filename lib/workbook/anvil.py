"""Find or install foundry's ``anvil`` (npm ``@foundry-rs/anvil``), the real node the bench compares with.

``ensure_anvil()`` returns the path of an anvil binary, installing the pinned npm package into
``<project>/.tools/anvil`` (git-ignored) on first use, under a file lock so parallel pytest workers
install once. Without npm, or when the install fails (offline), it returns None and
``why_no_anvil()`` says why: anvil is optional, callers skip what needs it.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
from pathlib import Path

ANVIL_VERSION = "1.7.1"
PACKAGE = "@foundry-rs/anvil"
TOOLS_DIR = Path(__file__).resolve().parents[2] / ".tools" / "anvil"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

_reason: str | None = None


def why_no_anvil() -> str | None:
    """Why the last ``ensure_anvil()`` returned None (None if it found anvil)."""
    return _reason


def _installed(prefix: Path) -> str | None:
    """The native binary of the platform package if present, else npm's launcher script."""
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    package = f"anvil-{platform.system().lower()}-{arch}"
    native = prefix / "node_modules" / "@foundry-rs" / package / "bin" / "anvil"
    for candidate in (native, prefix / "node_modules" / ".bin" / "anvil"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _version_ok(binary: str) -> bool:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and ANVIL_VERSION in out.stdout


def ensure_anvil(prefix: Path | None = None, *, timeout: float = 300.0) -> str | None:
    """Path to anvil ``ANVIL_VERSION``, installed with npm into *prefix* if needed; None (with a reason)."""
    global _reason
    prefix = Path(prefix or os.environ.get("WORKBOOK_ANVIL_DIR") or TOOLS_DIR)
    found = _installed(prefix)
    if found and _version_ok(found):
        _reason = None
        return found
    npm = shutil.which("npm")
    if npm is None:
        _reason = "npm is not installed: cannot install @foundry-rs/anvil"
        return None
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel workers: one installs, the others then find it
        found = _installed(prefix)
        if found and _version_ok(found):
            _reason = None
            return found
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(prefix),
                 f"{PACKAGE}@{ANVIL_VERSION}"],
                capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            _reason = f"npm install {PACKAGE}@{ANVIL_VERSION} did not finish within {timeout:g} s"
            return None
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            _reason = f"npm install {PACKAGE}@{ANVIL_VERSION} failed: {' / '.join(tail)}"
            return None
        found = _installed(prefix)
        if found is None or not _version_ok(found):
            _reason = f"npm installed {PACKAGE}@{ANVIL_VERSION} but no working anvil {ANVIL_VERSION} binary"
            return None
    _reason = None
    return found
