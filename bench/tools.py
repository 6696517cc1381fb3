"""Outside programs the benchmarks compare against or drive, installed from Debian when missing."""

from __future__ import annotations

import os
import shutil
import subprocess


def debian_binary(name: str, package: str) -> tuple[str | None, str]:
    """Path to *name*, installing Debian's *package* when running as root; else (None, why not)."""
    found = shutil.which(name)
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, f"{name} is not installed and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(
        ["apt-get", "install", "-y", package], capture_output=True, text=True, timeout=600, env=env
    )
    if proc.returncode != 0 and "Unable to locate package" in proc.stderr:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, env=env)
        proc = subprocess.run(
            ["apt-get", "install", "-y", package], capture_output=True, text=True, timeout=600, env=env
        )
    found = shutil.which(name)
    if found:
        return found, ""
    return None, f"apt-get install {package} failed: {proc.stderr.strip()[-200:]}"
