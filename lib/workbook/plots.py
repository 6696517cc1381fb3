"""Pictures the notebooks show: topology diagrams, write timelines, message sequence charts, failure bars.

Every function takes plain data (lists of dicts or DataFrames), returns a matplotlib ``Figure`` and
never touches a service, so the same picture can be drawn from a live run or from saved logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

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
    return fig


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
    return fig


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
    return fig


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
    return fig


def metric_bars(values: Mapping[str, float], *, title: str, ylabel: str = "") -> Figure:
    """A small bar chart of named values (e.g. sessions per upstream from /metrics)."""
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.bar(list(values), list(values.values()), color="#4c72b0")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


TYPE_COLOURS = {"ok": "#4c72b0", "fail": "#dd8452", "info": "#d62728", "pending": "#999999"}
FAULT_COLOURS = ["#f2c14e", "#b07aa1", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac"]


def timeline(history: Any, *, title: str = "Timeline", highlight: Iterable[Any] = (),
             max_ops: int = 20000, max_lanes: int = 40) -> Figure:
    """Jepsen's timeline: one lane per process, one bar per operation from invoke to completion coloured
    by outcome (ok / fail / info / pending), and the nemesis's faults as shaded bands across every lane
    from their start to their end. *highlight*: keys whose operations get a red edge (e.g. lost writes).
    At most *max_lanes* processes are drawn (the first ones; the title says how many were left out).
    """
    ops = [r for r in history.operations() if r["process"] != "nemesis"][-max_ops:]
    faults = history.faults()
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
        if end - f["start"] < end_of_run / 400:
            ax.axvline(f["start"], color=colour, lw=1.5)
        else:
            ax.axvspan(f["start"], end, color=colour, alpha=0.3, lw=0)
        ax.text(f["start"], len(processes) - 0.4, f" {f['kind']} {f['node']}", fontsize=7, va="bottom",
                rotation=0, clip_on=True)
    for kind, colour in kinds.items():
        ax.plot([], [], color=colour, lw=6, alpha=0.5, label=f"nemesis: {kind}")
    ax.set_yticks(range(len(processes)), processes)
    ax.set_ylim(-0.8, len(processes) + 0.3)
    ax.set_xlabel("seconds since the history started")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


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
    return fig


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str,
          title: str) -> Figure:
    """One line per named (xs, ys) series, e.g. a process's memory sampled through a run."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker=".", ms=3, lw=1.2, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
    return fig
