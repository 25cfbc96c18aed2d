"""PNG plots of how the table's and the trainer's cost grows with size (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_table", "plot_trainer"]


def plot_table(cells: Sequence[dict[str, Any]], path: Path) -> None:
    """Rows vs lookup/update rows/s and bytes per row, both layouts, per dimension.

    Args:
        cells: the `cells` of `table.json` (one per dimension and size).
        path: where the PNG goes.
    """
    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)
    rate_ax, bytes_ax = fig.subplots(1, 2)
    for dim in sorted({c["dim"] for c in cells}):
        mine = sorted((c for c in cells if c["dim"] == dim), key=lambda c: c["rows"])
        sizes = [c["rows"] for c in mine]
        for layout in ("key", "packed"):
            figures = [c["layouts"][layout] for c in mine]
            for what, style in (("lookup", "-o"), ("update", "--s")):
                rates = [f[f"{what}_rows_per_s"] for f in figures]
                rate_ax.plot(sizes, rates, style, label=f"dim {dim} {layout} {what}")
            per_row = [f["bytes_per_row"] for f in figures]
            bytes_ax.plot(sizes, per_row, "-o", label=f"dim {dim} {layout}")
        raw = [c["layouts"]["key"]["raw_mget_rows_per_s"] for c in mine]
        rate_ax.plot(sizes, raw, ":", color="grey", label=f"dim {dim} raw MGET")
        bytes_ax.plot(sizes, [c["payload_bytes"] for c in mine], ":", label=f"dim {dim} payload")
    rate_ax.set(xscale="log", xlabel="rows in the table", ylabel="rows/s (batch 4096)")
    rate_ax.set_title("lookup and update rate")
    bytes_ax.set(xscale="log", xlabel="rows in the table", ylabel="bytes per row")
    bytes_ax.set_title("Redis memory per row")
    bytes_ax.set_ylim(bottom=0)
    for ax in (rate_ax, bytes_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


def plot_trainer(sizes: Sequence[dict[str, Any]], path: Path) -> None:
    """Distinct ids vs the trainer's events/s and the raw consume's records/s.

    Args:
        sizes: the `sizes` of `trainer.json` (one per distinct-id count).
        path: where the PNG goes.
    """
    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ids = [s["distinct_ids"] for s in sizes]
    ax.plot(ids, [s["events_per_s"] for s in sizes], "-o", label="trainer events/s")
    ax.plot(ids, [s["raw_consume_records_per_s"] for s in sizes], ":s", label="raw consume")
    ax.set(xscale="log", xlabel="distinct ids in the stream", ylabel="per second")
    ax.set_title("trainer throughput by table size")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
