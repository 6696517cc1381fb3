"""Defect switches: ``--defect NAME`` (repeatable), each off by default, each announced in the log."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from servicekit.logs import JsonLogger


def add_defect_argument(parser: argparse.ArgumentParser, defects: Mapping[str, str]) -> None:
    """Add ``--defect NAME`` with *defects* (name → one-line description of the historical mechanism)."""
    listing = "; ".join(f"{name}: {text}" for name, text in defects.items())
    parser.add_argument(
        "--defect", action="append", default=[], choices=sorted(defects), metavar="NAME",
        help=f"put back a historical defect (repeatable, all off by default). {listing}",
    )


def announce_defects(log: JsonLogger, defects: list[str], descriptions: Mapping[str, str]) -> frozenset[str]:
    """Log one warning line per enabled defect and return them as a frozenset."""
    enabled = frozenset(defects)
    for name in sorted(enabled):
        log.warning("defect.enabled", defect=name, description=descriptions[name],
                    message=f"DEFECT ENABLED: {name}: {descriptions[name]}")
    return enabled
