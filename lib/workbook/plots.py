"""Pictures the notebooks show: topology diagrams, write timelines, message sequence charts, failure bars.

Every function takes plain data (lists of dicts or DataFrames), returns a matplotlib ``Figure`` and
never touches a service, so the same picture can be drawn from a live run or from saved logs. A figure
is shown where the notebook shows it: as the cell's value, or with ``display(...)``; it is closed to
pyplot, so it is never drawn a second time when the cell ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch


def _done(fig: Figure) -> Figure:
    """Hand the figure to the caller only: closed to pyplot, so Jupyter draws it once, where the notebook
    shows it (the cell's value, or ``display``), not a second time when the cell ends."""
    plt.close(fig)
    return fig


KIND_COLOURS = {
    "kvstore": "#4c72b0",
    "elnode": "#55a868",
    "rpcproxy": "#c44e52",
    "client": "#8172b2",
    "link": "#999999",
}
HIGHLIGHT = "#d62728"


def topology_diagram(nodes: Sequence[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]],
                     title: str = "Topology") -> Figure:
    """Draw boxes for *nodes* (``name``, ``kind``, ``x``, ``y``, optional ``label``) and arrows for *edges*.

    An edge is ``{"src", "dst", "label"?, "style"?}``; ``style="link"`` draws a dashed line for a
    connection that goes through a fault link, ``"cut"`` draws it red and crossed.
    """
    fig, ax = plt.subplots(figsize=(9, 4.8))
    where = {n["name"]: (float(n["x"]), float(n["y"])) for n in nodes}
    for edge in edges:
        (x1, y1), (x2, y2) = where[edge["src"]], where[edge["dst"]]
        style = edge.get("style", "direct")
        colour = HIGHLIGHT if style == "cut" else ("#777777" if style == "link" else "#333333")
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                    arrowprops={"arrowstyle": "<->" if edge.get("both") else "->", "color": colour,
                                "linestyle": "--" if style in ("link", "cut") else "-",
                                "shrinkA": 38, "shrinkB": 38, "lw": 1.4})
        if edge.get("label"):
            ax.text((x1 + x2) / 2, (y1 + y2) / 2, edge["label"], fontsize=7.5, color=colour,
                    ha="center", va="center", bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
    for node in nodes:
        x, y = where[node["name"]]
        colour = KIND_COLOURS.get(node.get("kind", ""), "#888888")
        ax.add_patch(FancyBboxPatch((x - 0.42, y - 0.2), 0.84, 0.4, boxstyle="round,pad=0.04",
                                    fc=colour, ec="black", lw=0.8, alpha=0.9))
        ax.text(x, y + 0.05, node["name"], ha="center", va="center", color="white", fontsize=10,
                fontweight="bold")
        ax.text(x, y - 0.1, node.get("label", node.get("kind", "")), ha="center", va="center",
                color="white", fontsize=7)
    xs = [p[0] for p in where.values()]
    ys = [p[1] for p in where.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return _done(fig)


def write_timeline(acks: pd.DataFrame, events: Mapping[str, float] | Sequence[tuple[str, float]],
                   lost: Iterable[str] = (), *, time_col: str = "t", key_col: str = "key",
                   title: str = "Acknowledged writes") -> Figure:
    """Plot acknowledged writes over time (one dot per ack), vertical lines at *events*, lost ones red.

    *acks* has one row per acknowledged write with a time column (seconds since the start of the run)
    and a key column; *events* maps a label (``"kill kv1"``) to a time on the same axis.
    """
    lost = set(lost)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    if not acks.empty:
        kept = acks[~acks[key_col].isin(lost)]
        gone = acks[acks[key_col].isin(lost)]
        ax.scatter(kept[time_col], range(len(kept)), s=4, color="#4c72b0", label=f"kept ({len(kept)})")
        if len(gone):
            positions = [acks.index.get_loc(i) for i in gone.index]
            ax.scatter(gone[time_col], positions, s=22, color=HIGHLIGHT, marker="x",
                       label=f"acknowledged, then lost ({len(gone)})", zorder=3)
    pairs = events.items() if isinstance(events, Mapping) else events
    for label, t in pairs:
        ax.axvline(t, color="black", lw=1, ls="--")
        ax.text(t, ax.get_ylim()[1], f" {label}", rotation=90, va="top", ha="right", fontsize=8)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("acknowledged write #")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _done(fig)


def sequence_chart(messages: pd.DataFrame, lanes: Sequence[str], *, highlight_col: str = "highlight",
                   label_col: str = "label", title: str = "Message sequence",
                   max_messages: int = 60) -> Figure:
    """Draw a message sequence chart: one lifeline per lane, one arrow per message in time order.

    *messages* has columns ``ts``, ``src``, ``dst`` (lane names), a label, and optionally a boolean
    highlight column (drawn red: the leaked response, the unknown subscription id).
    """
    rows = messages.sort_values("ts").head(max_messages).reset_index(drop=True)
    hot_rows = (rows[highlight_col].fillna(False).astype(bool) if highlight_col in rows
                else pd.Series(False, index=rows.index))
    height = max(3.0, 0.32 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(10, height))
    x_of = {lane: i for i, lane in enumerate(lanes)}
    for lane, x in x_of.items():
        ax.plot([x, x], [-0.5, len(rows) + 0.2], color="#bbbbbb", lw=1, zorder=0)
        ax.text(x, -0.9, lane, ha="center", va="bottom", fontsize=10, fontweight="bold")
    for i, msg in rows.iterrows():
        if msg["src"] not in x_of or msg["dst"] not in x_of:
            continue
        x1, x2 = x_of[msg["src"]], x_of[msg["dst"]]
        hot = bool(hot_rows[i])
        colour = HIGHLIGHT if hot else "#333333"
        ax.annotate("", xy=(x2, i), xytext=(x1, i),
                    arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.8 if hot else 1.0})
        ax.text((x1 + x2) / 2, i - 0.12, str(msg.get(label_col, "")), ha="center", va="bottom",
                fontsize=7, color=colour, fontweight="bold" if hot else "normal")
    ax.set_ylim(len(rows) + 0.5, -1.2)
    ax.set_xlim(-0.6, len(lanes) - 0.4)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return _done(fig)


def failure_bars(counts: pd.DataFrame, *, group_col: str = "test", fail_col: str = "failures",
                 total_col: str = "runs", title: str = "Failures over runs") -> Figure:
    """Bar chart of failures out of runs per test variant (naive against corrected)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    colours = [HIGHLIGHT if f else "#55a868" for f in counts[fail_col]]
    bars = ax.bar(counts[group_col], counts[fail_col], color=colours)
    for bar, fails, total in zip(bars, counts[fail_col], counts[total_col], strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{fails}/{total}",
                ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, max(1, int(counts[total_col].max())) * 1.15)
    ax.set_ylabel("failed runs")
    ax.set_title(title)
    fig.tight_layout()
    return _done(fig)


def metric_bars(values: Mapping[str, float], *, title: str, ylabel: str = "") -> Figure:
    """A small bar chart of named values (e.g. sessions per upstream from /metrics)."""
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.bar(list(values), list(values.values()), color="#4c72b0")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return _done(fig)


Marks = Sequence[tuple[str, float]]
Spans = Sequence[tuple[str, float, float]]


def _mark(ax: Any, marks: Marks = (), spans: Spans = ()) -> None:
    """Dashed vertical lines at *marks* (label, t) and shaded bands for *spans* (label, start, end)."""
    colours: dict[str, str] = {}
    for label, start, end in spans:
        first = label not in colours
        colour = colours.setdefault(label, FAULT_COLOURS[len(colours) % len(FAULT_COLOURS)])
        ax.axvspan(start, end, color=colour, alpha=0.25, lw=0, label=label if first else None)
    for label, t in marks:
        ax.axvline(t, color="black", lw=1, ls="--")
        ax.text(t, 1.0, f" {label}", transform=ax.get_xaxis_transform(), rotation=90, va="top",
                ha="right", fontsize=7)


def counts_over_time(rows: Sequence[Mapping[str, Any]], *, panel: str, line: str, marks: Marks = (),
                     spans: Spans = (), highlight: str = "unknown id", title: str = "",
                     ylabel: str = "received so far") -> Figure:
    """Cumulative count of events over time (``t``): one panel per value of *panel* (e.g. client), one
    step line per value of *line* (e.g. subscription); the *highlight* line red and dashed."""
    frame = pd.DataFrame(list(rows))
    panels = list(dict.fromkeys(frame[panel])) if len(frame) else ["(none)"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True, squeeze=False)
    values = sorted({v for v in frame[line] if v != highlight}) if len(frame) else []
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]  # red is the highlight
    colour = {v: palette[i % len(palette)] for i, v in enumerate(values)}
    colour[highlight] = HIGHLIGHT
    end = max([float(frame["t"].max()) if len(frame) else 0.0] + [t for _l, t in marks])
    for ax, name in zip(axes[:, 0], panels, strict=True):
        mine = frame[frame[panel] == name] if len(frame) else frame
        for value in [v for v in [*values, highlight] if len(mine) and v in set(mine[line])]:
            ts = sorted(mine[mine[line] == value]["t"])
            hot = value == highlight
            ax.step([*ts, end], [*range(1, len(ts) + 1), len(ts)], where="post", lw=2 if hot else 1.3,
                    color=colour[value], ls="--" if hot else "-", label=f"{value} ({len(ts)})")
        _mark(ax, marks, spans)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name}", fontsize=9, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the history started")
    fig.suptitle(title)
    fig.tight_layout()
    return _done(fig)


def lines_over_time(rows: Sequence[Mapping[str, Any]] | pd.DataFrame, *, y: str, group: str,
                    marks: Marks = (), spans: Spans = (), title: str = "", ylabel: str = "",
                    step: bool = True, dots: bool = False, logy: bool = False,
                    ylim: tuple[float, float] | None = None) -> Figure:
    """One line (or dots) per value of *group*: *y* against ``t``, with marks and shaded spans."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    fig, ax = plt.subplots(figsize=(10, 3.4))
    end = float(frame["t"].max()) if len(frame) else 0.0
    for value in dict.fromkeys(frame[group]) if len(frame) else []:
        mine = frame[frame[group] == value].sort_values("t")
        if dots:
            ax.scatter(mine["t"], mine[y], s=6, label=str(value))
        elif step:  # a state holds until the next sample: draw the last one to the end of the picture
            ax.step([*mine["t"], end], [*mine[y], mine[y].iloc[-1]], where="post", lw=1.6, label=str(value))
        else:
            ax.plot(mine["t"], mine[y], lw=1.4, marker="o", ms=3, label=str(value))
    _mark(ax, marks, spans)
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("seconds since the history started")
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return _done(fig)


OUTCOME_COLOURS = {"result": "#4c72b0", "error answer": "#dd8452", "no answer": HIGHLIGHT}


def outcomes_by_send_time(rows: Sequence[Mapping[str, Any]], *, spans: Spans = (), marks: Marks = (),
                          title: str = "") -> Figure:
    """One dot per request at its send time (``t``), on the row of its ``outcome`` (result / error
    answer / no answer), with the windows shaded."""
    frame = pd.DataFrame(list(rows))
    order = [o for o in OUTCOME_COLOURS if len(frame) and o in set(frame["outcome"])]
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for y, outcome in enumerate(order):
        mine = frame[frame["outcome"] == outcome]
        ax.scatter(mine["t"], [y] * len(mine), s=10, color=OUTCOME_COLOURS[outcome],
                   label=f"{outcome} ({len(mine)})")
    _mark(ax, marks, spans)
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(-0.7, max(len(order), 1) - 0.3)
    ax.set_xlabel("send time, seconds since the history started")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return _done(fig)


def checks_and_latency(checks: Sequence[Mapping[str, Any]], requests: Sequence[Mapping[str, Any]], *,
                       spans: Spans = (), marks: Marks = (), title: str = "") -> Figure:
    """Top: each health check as a bar from its start to its end, one lane per upstream, coloured by
    outcome (ok / error / none completed). Bottom: each request's latency at its send time (``t``,
    ``latency``; ``answered`` False drawn as red crosses at the time it was given up)."""
    colours = {"ok": "#55a868", "error": "#dd8452", "none completed": HIGHLIGHT}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True,
                                      gridspec_kw={"height_ratios": [1, 1.6]})
    lanes = list(dict.fromkeys(c["upstream"] for c in checks))
    for outcome, colour in colours.items():
        mine = [c for c in checks if c["outcome"] == outcome]
        for i, name in enumerate(lanes):
            bars = [(c["start"], max(c["end"] - c["start"], 0.004)) for c in mine if c["upstream"] == name]
            top.broken_barh(bars, (i - 0.35, 0.7), color=colour, lw=0)
        top.plot([], [], color=colour, lw=6, label=f"check {outcome} ({len(mine)})")
    top.set_yticks(range(len(lanes)), lanes)
    top.set_ylim(-0.7, max(len(lanes), 1) - 0.3)
    top.set_title("health checks (start → end)", fontsize=9, loc="left")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _mark(top, marks, spans)
    frame = pd.DataFrame(list(requests))
    if len(frame):
        ok = frame[frame["answered"]]
        lost = frame[~frame["answered"]]
        bottom.scatter(ok["t"], ok["latency"], s=8, color="#4c72b0", label=f"answered ({len(ok)})")
        bottom.scatter(lost["t"], lost["latency"], s=18, marker="x", color=HIGHLIGHT,
                       label=f"no answer, given up ({len(lost)})")
    _mark(bottom, (), spans)
    bottom.set_ylabel("request latency, s")
    bottom.set_xlabel("seconds since the history started")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _done(fig)


def gauge_steps(samples: pd.DataFrame, *, x: str = "t", y: str = "value", series: str = "series",
                panels: str = "panel", marks: pd.DataFrame | None = None, title: str = "",
                ylabel: str = "") -> Figure:
    """A sampled gauge over time as step lines: one panel per value of *panels* (shared y axis), one line
    per *series*. *marks* (rows with *x*, *panels* and an optional ``label``) draw thin vertical lines,
    e.g. where each test began."""
    names = list(dict.fromkeys(samples[panels]))
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.2 + 2.0 * len(names)), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        rows = samples[samples[panels] == name]
        for key, group in rows.groupby(series, sort=True):
            ax.step(group[x], group[y], where="post", lw=1.4, label=str(key))
        if marks is not None:
            for t in marks[marks[panels] == name][x]:
                ax.axvline(t, color="#bbbbbb", lw=0.6, zorder=0)
        ax.set_title(str(name), fontsize=10, loc="left")
        ax.set_ylabel(ylabel)
        ax.set_xlabel(x)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return _done(fig)


TYPE_COLOURS = {"ok": "#4c72b0", "fail": "#dd8452", "info": "#d62728", "pending": "#999999"}
FAULT_COLOURS = ["#f2c14e", "#b07aa1", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac"]


LABEL_ROW = 0.5  # lanes of height one label row takes above the lanes
MAX_LABEL_ROWS = 4  # beyond it labels overlap rather than push the lanes down
CHAR_SPAN = 1 / 100  # share of the time axis a 7-point character may cover (about 1/150 measured)


def _label_rows(labels: Sequence[tuple[float, str]], *, span: float) -> list[int]:
    """A row for each (x, text) label, the lowest whose labels all end before this one starts, so labels
    of faults that start together (or close) stack instead of overprinting each other (at most
    MAX_LABEL_ROWS rows)."""
    ends: list[float] = []  # per row: where its last label ends
    rows = []
    width = max(span, 1e-9) * CHAR_SPAN
    for x, text in labels:
        row = next((i for i, end in enumerate(ends) if end <= x), len(ends))
        if row == MAX_LABEL_ROWS:  # crowded (a dense schedule): the row that frees first
            row = min(range(len(ends)), key=ends.__getitem__)
        elif row == len(ends):
            ends.append(0.0)
        ends[row] = x + width * (len(text) + 1)
        rows.append(row)
    return rows


def timeline(history: Any, *, title: str = "Timeline", highlight: Iterable[Any] = (),
             max_ops: int = 20000, max_lanes: int = 40) -> Figure:
    """Jepsen's timeline: one lane per process, one bar per operation from invoke to completion coloured
    by outcome (ok / fail / info / pending), and the nemesis's faults as shaded bands across every lane
    from their start to their end (a fault that could not be applied: a line). *highlight*: keys whose
    operations get a red edge (e.g. lost writes). At most *max_lanes* processes are drawn (the first
    ones; the title says how many were left out).
    """
    ops = [r for r in history.operations() if r["process"] != "nemesis"][-max_ops:]
    faults = sorted(history.faults(), key=lambda f: f["start"])
    processes = sorted({r["process"] for r in ops}, key=lambda p: (len(p), p))
    if len(processes) > max_lanes:
        title = f"{title} (first {max_lanes} of {len(processes)} processes)"
        processes = processes[:max_lanes]
        shown = set(processes)
        ops = [r for r in ops if r["process"] in shown]
    lane = {p: i for i, p in enumerate(processes)}
    end_of_run = max([r["complete_time"] or r["invoke_time"] for r in ops] +
                     [f["end"] or f["start"] for f in faults] + [0.0])
    marked = set(highlight)
    fig, ax = plt.subplots(figsize=(11, max(2.4, 0.9 + 0.28 * len(processes))))
    by_type: dict[str, list[tuple[float, float, int]]] = {}
    for r in ops:
        end = r["complete_time"] if r["complete_time"] is not None else end_of_run
        by_type.setdefault(r["type"], []).append((r["invoke_time"], max(end - r["invoke_time"], 1e-4),
                                                  lane[r["process"]]))
    for type_, bars in by_type.items():
        for y in sorted({b[2] for b in bars}):
            ax.broken_barh([(b[0], b[1]) for b in bars if b[2] == y], (y - 0.35, 0.7),
                           color=TYPE_COLOURS.get(type_, "#999999"), lw=0)
        ax.plot([], [], color=TYPE_COLOURS.get(type_, "#999999"), lw=6, label=f"{type_} ({len(bars)})")
    for r in ops:
        if r["key"] in marked and r["complete_time"] is not None:
            ax.broken_barh([(r["invoke_time"], max(r["complete_time"] - r["invoke_time"], 1e-4))],
                           (lane[r["process"]] - 0.45, 0.9), facecolor="none", edgecolor=HIGHLIGHT, lw=1.2)
    kinds: dict[str, str] = {}
    for f in faults:
        colour = kinds.setdefault(f["kind"], FAULT_COLOURS[len(kinds) % len(FAULT_COLOURS)])
        end = f["end"] if f["end"] is not None else end_of_run
        if f["type"] != "ok":  # a fault that could not be applied (a twin refused to start) lasted nothing
            end = f["start"]
        if end - f["start"] < end_of_run / 400:
            ax.axvline(f["start"], color=colour, lw=1.5)
        else:
            ax.axvspan(f["start"], end, color=colour, alpha=0.3, lw=0)
    lo, hi = ax.get_xlim()  # what is drawn so far sets the axis (texts do not move it)
    rows = _label_rows([(f["start"], f" {f['kind']} {f['node']}") for f in faults], span=hi - lo)
    for f, row in zip(faults, rows, strict=True):
        ax.text(f["start"], len(processes) - 0.4 + LABEL_ROW * row, f" {f['kind']} {f['node']}", fontsize=7,
                va="bottom", rotation=0, clip_on=True)
    for kind, colour in kinds.items():
        ax.plot([], [], color=colour, lw=6, alpha=0.5, label=f"nemesis: {kind}")
    ax.set_yticks(range(len(processes)), processes)
    ax.set_ylim(-0.8, len(processes) + 0.3 + LABEL_ROW * max(rows, default=0))
    ax.set_xlabel("seconds since the history started")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return _done(fig)


def version_clock(history: Any, *, f: str = "write", title: str = "Version clocks") -> Figure:
    """Each acknowledged *f*'s version, its wall component (``wall_ms`` of ``wall_ms.logical.node``)
    against the real time it was acknowledged, one colour per node that took it: a node whose clock is
    behind draws a line below the others (both axes in seconds since the history started)."""
    fig, ax = plt.subplots(figsize=(10, 3.8))
    by_node: dict[str, tuple[list[float], list[float]]] = {}
    for r in history.operations(f=f):
        if r["type"] != "ok" or not r["version"]:
            continue
        xs, ys = by_node.setdefault(r["node"], ([], []))
        xs.append(r["complete_wall"] - history.wall0)
        ys.append(int(str(r["version"]).split(".", 1)[0]) / 1000.0 - history.wall0)
    for i, (node, (xs, ys)) in enumerate(sorted(by_node.items())):
        ax.scatter(xs, ys, s=8, color=FAULT_COLOURS[i % len(FAULT_COLOURS)] if i else "#4c72b0",
                   label=f"through {node} ({len(xs)})")
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], color="#999999", lw=0.8, ls="--", label="version = real time")
    ax.set_xlabel("acknowledged at (real time, s)")
    ax.set_ylabel("version's wall component (s)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _done(fig)


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str,
          title: str, hline: tuple[str, float] | None = None, marker: str = "o") -> Figure:
    """One marked line per named (xs, ys) series (e.g. time to converge against writes, or a process's
    memory sampled through a run), and an optional labelled horizontal bound."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker=marker, ms=4 if marker == "o" else 3, lw=1.2, label=name)
    if hline is not None:
        ax.axhline(hline[1], color=HIGHLIGHT, lw=1, ls="--", label=hline[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _done(fig)


def error_rate(history: Any, *, bin_s: float = 1.0, title: str = "Error rate under the nemesis",
               marks: Mapping[str, float] | None = None, max_rate: float | None = None,
               excuse: Any = None) -> Figure:
    """Client error rate per *bin_s* seconds (operations not ending ``ok`` over all, by invoke time) with
    the requests per second, and under it the nemesis's faults as bands, one lane per target.
    *marks*: labelled vertical lines (e.g. the first violation); *max_rate*: the SLO line; ``excuse(row)``:
    errors drawn apart, in grey (as :func:`workbook.checkers.error_rate` leaves them out)."""
    ops = [r for r in history.operations() if r["process"] != "nemesis"]
    faults = history.faults()
    end = max([r["complete_time"] or r["invoke_time"] for r in ops] +
              [f["end"] or f["start"] for f in faults] + [bin_s])
    bins = max(1, int(end / bin_s) + 1)
    total, bad, excused = [0] * bins, [0] * bins, [0] * bins
    for r in ops:
        i = min(bins - 1, int(r["invoke_time"] / bin_s))
        total[i] += 1
        if r["type"] != "ok" and excuse is not None and excuse(r):
            excused[i] += 1
        else:
            bad[i] += r["type"] != "ok"
    xs = [i * bin_s for i in range(bins)]
    rate = [100.0 * b / t if t else 0.0 for b, t in zip(bad, total, strict=True)]
    if any(excused):
        ax_rate = [100.0 * b / t if t else 0.0 for b, t in zip(excused, total, strict=True)]
    targets = sorted({f["node"] for f in faults})
    fig, (ax, lanes) = plt.subplots(2, 1, sharex=True, figsize=(11, 3.4 + 0.35 * max(1, len(targets))),
                                    gridspec_kw={"height_ratios": [3, max(1, len(targets))]})
    if any(excused):
        ax.step(xs, ax_rate, where="post", color="#999999", ls="--", label="excused errors (%)")
    ax.step(xs, rate, where="post", color=HIGHLIGHT, label="errors (%)")
    if max_rate is not None:
        ax.axhline(100.0 * max_rate, color="black", ls=":", lw=1, label=f"SLO {100 * max_rate:g} %")
    ax.set_ylabel("errors (%)")
    other = ax.twinx()
    other.step(xs, [t / bin_s for t in total], where="post", color="#4c72b0", alpha=0.5, lw=1)
    other.set_ylabel("requests/s", color="#4c72b0")
    for label, t in (marks or {}).items():
        for axis in (ax, lanes):
            axis.axvline(t, color="black", lw=1.2, ls="--")
        ax.text(t, ax.get_ylim()[1], f" {label}", va="top", fontsize=8)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    kinds: dict[str, str] = {}
    lane = {t: i for i, t in enumerate(targets)}
    for f in faults:
        colour = kinds.setdefault(f["kind"], FAULT_COLOURS[len(kinds) % len(FAULT_COLOURS)])
        stop = f["end"] if f["end"] is not None else end
        lanes.broken_barh([(f["start"], max(stop - f["start"], end / 400))], (lane[f["node"]] - 0.4, 0.8),
                          color=colour, alpha=0.85)
        lanes.text(f["start"], lane[f["node"]], f" {f['kind']}", va="center", fontsize=7, clip_on=True)
    for kind, colour in kinds.items():
        lanes.plot([], [], color=colour, lw=6, label=kind)
    lanes.set_yticks(range(len(targets)), targets)
    lanes.set_ylim(-0.6, max(1, len(targets)) - 0.4)
    lanes.set_xlabel("seconds since the history started")
    if kinds:
        lanes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return _done(fig)


def cdf(samples: Mapping[str, Sequence[float]], *, xlabel: str, title: str,
        marks: Mapping[str, float] | None = None, log: bool = True) -> Figure:
    """Empirical CDF of each named sample (e.g. request latencies of two proxies), on a log x axis;
    *marks*: labelled vertical lines (a bound)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, values in samples.items():
        ordered = sorted(v for v in values if v > 0 or not log)
        if ordered:
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=name)
    for label, x in (marks or {}).items():
        ax.axvline(x, color="black", ls=":", lw=1)
        ax.text(x, 0.02, f" {label}", fontsize=8)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _done(fig)
