"""What a reader sees in the timeline: fault labels that start together do not overprint each other."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg
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
        canvas = FigureCanvasAgg(fig)  # the figure comes back closed to pyplot, without a drawing canvas
        canvas.draw()
        renderer = canvas.get_renderer()
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


def test_a_figure_is_left_to_the_notebook_to_show_once() -> None:
    # Jupyter's inline backend draws every figure still open in pyplot when a cell ends: a figure that the
    # cell also shows (its value, or display) was drawn twice.
    before = set(plt.get_fignums())
    fig = plots.lines({"a": ([0, 1], [1, 2])}, xlabel="x", ylabel="y", title="t")
    assert set(plt.get_fignums()) == before
    assert fig.axes and fig.axes[0].get_title() == "t"


def test_every_notebook_shows_each_figure_it_draws() -> None:
    # Closed to pyplot, a figure appears only where the notebook shows it: as the cell's last expression,
    # inside display(...), or assigned and then displayed.
    notebooks = sorted((Path(__file__).parents[2] / "notebooks").rglob("*.ipynb"))
    assert notebooks
    unshown = []
    for path in notebooks:
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or "plots." not in source:
                continue
            flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            body = compile(source, str(path), "exec", flags=flags).body
            for position, stmt in enumerate(body):
                if isinstance(stmt, ast.Expr) and ast.unparse(stmt.value).startswith("plots."):
                    if position != len(body) - 1:
                        unshown.append((path.name, index, ast.unparse(stmt)[:60]))
                elif isinstance(stmt, ast.Assign) and ast.unparse(stmt.value).startswith("plots."):
                    name = ast.unparse(stmt.targets[0])
                    if f"display({name})" not in source and ast.unparse(body[-1]) != name:
                        unshown.append((path.name, index, ast.unparse(stmt)[:60]))
    assert not unshown
