"""What a reader sees in the timeline: fault labels that start together do not overprint each other."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from workbook import History, plots


def _fault(history: History, kind: str, node: str) -> None:
    op = history.invoke("nemesis", kind, node=node, key=f"{kind}-{node}")
    history.complete(op, "ok")


def test_fault_labels_that_start_together_are_stacked_not_overprinted() -> None:
    history = History()
    first = history.invoke("c1", "write", node="kv1", key="a", value=1)
    _fault(history, "kill", "kv2")
    _fault(history, "partition", "kv3")  # takes effect right after the kill, as in kv-03 and kv-07
    _fault(history, "pause", "kv1")
    history.complete(first, "ok")
    second = history.invoke("c2", "write", node="kv1", key="b", value=2)
    history.complete(second, "ok")
    fig = plots.timeline(history)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        labels = [t for t in fig.axes[0].texts if t.get_text().strip()]
        assert sorted(t.get_text().strip() for t in labels) == ["kill kv2", "partition kv3", "pause kv1"]
        boxes = [t.get_window_extent(renderer) for t in labels]
        overlapping = [(a.get_text(), b.get_text()) for (a, ba), (b, bb)
                       in itertools.combinations(zip(labels, boxes, strict=True), 2) if ba.overlaps(bb)]
        assert not overlapping
        top = fig.axes[0].get_ylim()[1]
        assert all(t.get_position()[1] < top for t in labels)  # every label inside the axes
    finally:
        plt.close(fig)
