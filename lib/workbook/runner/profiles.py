"""Parameter profiles (``parameters/<name>.yaml``): global values plus one section per notebook.

```yaml
timeout: 300          # runner: whole-run time limit per notebook, seconds
health_interval: 0.2  # ...global keys, see GLOBAL_KEYS
notebooks:
  kv-01: {writes: 500, timeout: 120}   # a notebook's own parameters (and its own time limit)
```
A global key is injected into a notebook only if its parameters cell declares that name; a notebook
section's keys must all be parameters of that notebook (the runner checks against the cell). Loading
validates: an unknown key or a wrong type stops with one line naming the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbook._exceptions import ProfileError

ROOT = Path(__file__).resolve().parents[3]
RUNNER_KEYS = ("timeout", "repeat")  # consumed by the runner, never injected

# name -> (allowed types, meaning). Add a key here when a notebook family needs a shared knob.
GLOBAL_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "timeout": ((int, float), "whole-run time limit per notebook, seconds"),
    "repeat": ((int,), "executions of each (notebook, mode) per run (--repeat overrides)"),
    "ready_timeout": ((int, float), "seconds a service may take to become ready"),
    "health_interval": ((int, float), "proxy health-check interval, seconds"),
    "unhealthy_after": ((int,), "consecutive failed checks before an upstream is unhealthy"),
    "request_rate": ((int, float), "HTTP requests per second of load generators"),
    "ws_sessions": ((int,), "concurrent WebSocket sessions"),
    "soak": ((int, float), "duration of soak phases, seconds"),
    "chaos": ((int, float), "duration of chaos phases (a nemesis schedule of faults), seconds"),
    "runs": ((int,), "repetitions inside a notebook (flaky-test patterns)"),
    "examples": ((int,), "property-based examples per property"),
    "seed": ((int,), "base random seed"),
}
_SCALARS = (bool, int, float, str, type(None))


@dataclass
class Profile:
    """A loaded, validated profile."""

    name: str
    path: Path
    values: dict[str, Any]
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, notebook_id: str) -> dict[str, Any]:
        return dict(self.notebooks.get(notebook_id, {}))

    def timeout(self, notebook_id: str, default: float = 600.0) -> float:
        """The whole-run time limit for *notebook_id* (its section's ``timeout`` wins)."""
        return float(self.section(notebook_id).get("timeout", self.values.get("timeout", default)))

    def repeat(self, notebook_id: str) -> int:
        """Executions of each of *notebook_id*'s modes per run (its section's ``repeat`` wins; default 1)."""
        return int(self.section(notebook_id).get("repeat", self.values.get("repeat", 1)))

    def parameters_for(self, notebook_id: str, declared: dict[str, Any]) -> dict[str, Any]:
        """Global values the notebook declares, then its own section (runner keys removed)."""
        merged = {k: v for k, v in self.values.items() if k in declared and k not in RUNNER_KEYS}
        merged.update({k: v for k, v in self.section(notebook_id).items() if k not in RUNNER_KEYS})
        return merged


def _is_plain(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    return isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """``ci`` → ``<repo>/parameters/ci.yaml`` (or ``$WORKBOOK_PARAMETERS/ci.yaml``); a path stays a path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return Path(text)
    base = Path(os.environ.get("WORKBOOK_PARAMETERS", ROOT / "parameters"))
    return base / f"{text}.yaml"


def load(name_or_path: str | os.PathLike[str]) -> Profile:
    """Load and validate a profile; raises ProfileError with one clear line."""
    path = resolve(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        available = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ProfileError(f"profile {str(name_or_path)!r} not found ({path}); available: "
                           f"{', '.join(available) or 'none'}") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"{path}: cannot read profile: {first}") from None
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys to values, got {type(doc).__name__}")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "notebooks":
            continue
        if key not in GLOBAL_KEYS:
            raise ProfileError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(GLOBAL_KEYS))}, "
                               "notebooks)")
        allowed, meaning = GLOBAL_KEYS[key]
        if not _type_ok(value, allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise ProfileError(f"{path}: {key} ({meaning}) must be {names}, got {value!r}")
        if isinstance(value, (int, float)) and value < 0:
            raise ProfileError(f"{path}: {key} must not be negative, got {value!r}")
        if key == "repeat" and value < 1:
            raise ProfileError(f"{path}: repeat must be at least 1, got {value!r}")
        values[key] = value
    sections = doc.get("notebooks") or {}
    if not isinstance(sections, dict):
        raise ProfileError(f"{path}: notebooks must map notebook ids to sections")
    notebooks: dict[str, dict[str, Any]] = {}
    for nb_id, section in sections.items():
        section = section or {}
        if not isinstance(section, dict):
            raise ProfileError(f"{path}: notebooks.{nb_id} must be a mapping of parameters")
        for key, value in section.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ProfileError(f"{path}: notebooks.{nb_id}: {key!r} is not a parameter name")
            if not _is_plain(value):
                raise ProfileError(f"{path}: notebooks.{nb_id}.{key}: unsupported value {value!r}")
            if key in GLOBAL_KEYS and not _type_ok(value, GLOBAL_KEYS[key][0]):
                names = " or ".join(t.__name__ for t in GLOBAL_KEYS[key][0])
                raise ProfileError(f"{path}: notebooks.{nb_id}.{key} must be {names}, got {value!r}")
            if key == "repeat" and value < 1:
                raise ProfileError(f"{path}: notebooks.{nb_id}.repeat must be at least 1, got {value!r}")
        notebooks[str(nb_id)] = dict(section)
    return Profile(path.stem, path, values, notebooks)
