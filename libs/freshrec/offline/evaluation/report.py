"""Human-readable output of an evaluation: `summary.md` and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["PLOT_FILES", "markdown_tables", "write_plots", "write_summary_md"]

PLOT_FILES = ("auc_over_time.png", "recall_over_time.png", "rows_vs_auc.png")
"""Plots `write_plots` draws, in order."""


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _method_note(name: str, method: Mapping[str, Any]) -> str:
    if name == "online":
        return "collisionless, fresh serving"
    if name == "hashing":
        buckets = method.get("buckets", {})
        parts = ", ".join(f"{t} {n:,}" for t, n in buckets.items())
        return f"buckets: {parts}; collision rate {method['collision_rate']:.1%}"
    if name == "frozen":
        return f"stops learning at {method['frozen_at']}"
    if "sync_interval_s" in method:
        return f"serving syncs every {method['sync_interval_s']:g} s of event time"
    if name == "popularity":
        return "item counts so far"
    if name == "online_retrieval":
        return "online's retrieval head alone (what FAISS serves)"
    if name == "online_no_user":
        return "online with every user row zeroed"
    if name == "cooccurrence":
        return "item-to-item cosine co-occurrence, updated after every batch"
    if name == "als":
        return f"implicit ALS refitted daily on all interactions so far ({method['refits']} fits)"
    return ""


def _diff(method: Mapping[str, Any], key: str) -> str:
    diff, se = method.get(f"{key}_diff_vs_online"), method.get(f"{key}_diff_se")
    if diff is None or se is None:
        return "-"
    return f"{diff:+.4f} ± {se:.4f}"


def markdown_tables(summary: Mapping[str, Any]) -> str:
    """The methods table, the sweep tables and the per-window AUC table, as markdown."""
    meta = summary["meta"]
    k = meta["k"]
    methods: Mapping[str, Mapping[str, Any]] = summary["methods"]
    span = meta.get("sweep_max_batch_span_s")
    sweep_note = (
        f"Sweeps: one replay per setting, {meta.get('sweep_batches', 0):,} micro-batches of "
        f"at most {meta['batch_size']} events"
        + ("" if span is None else f" and {span:g} s")
        + "; rows are the user + item rows kept at the end (and the most at any window end)."
    )
    recall = f"recall_at_{k}"
    lines = [
        *_table(
            [
                "method",
                "AUC",
                "log loss",
                f"Recall@{k}",
                f"NDCG@{k}",
                "Δ Recall vs online (paired SE)",
                f"2nd half Recall@{k}",
                "rows",
                "notes",
            ],
            [
                [
                    name,
                    m["auc"],
                    m["logloss"],
                    m[recall],
                    m[f"ndcg_at_{k}"],
                    _diff(m, recall),
                    m.get(f"{recall}_second_half"),
                    m.get("rows", "-"),
                    _method_note(name, m),
                ]
                for name, m in methods.items()
            ],
        ),
        *[f"\n`{name}`: {note}" for name, note in summary.get("notes", {}).items()],
        "",
        sweep_note,
        "",
        "Admission filter (counting, on the user and item tables):",
        "",
        *_table(
            ["min_count", "rows (end)", "rows (max)", "AUC", "log loss"],
            [
                [e["min_count"], e["rows"], e["rows_max"], e["auc"], e["logloss"]]
                for e in summary["sweeps"]["admission"]
            ],
        ),
        "",
        "Event-time expiry (user and item tables):",
        "",
        *_table(
            ["expire after", "rows (end)", "rows (max)", "AUC", "log loss"],
            [
                [
                    "none" if e["expire_after_days"] is None else f"{e['expire_after_days']:g} d",
                    e["rows"],
                    e["rows_max"],
                    e["auc"],
                    e["logloss"],
                ]
                for e in summary["sweeps"]["expiry"]
            ],
        ),
        "",
        "AUC per window (equal event counts):",
        "",
    ]
    windows = summary["meta"]["windows"]
    lines += _table(
        ["window", "until", *methods],
        [
            [
                str(w + 1),
                windows[w]["until"][:10],
                *(m["windows"]["auc"][w] for m in methods.values()),
            ]
            for w in range(len(windows))
        ],
    )
    return "\n".join(lines) + "\n"


def write_summary_md(summary: Mapping[str, Any], path: Path) -> None:
    """Write `summary.md`: the setup in one paragraph, then `markdown_tables`."""
    meta = summary["meta"]
    span = meta["max_batch_span_s"]
    limit = "" if span is None else f" and at most {span:g} s of event time"
    intro = [
        "# freshrec prequential evaluation",
        "",
        f"{meta['data']}: {meta['events']:,} events, {meta['examples']:,} examples "
        f"({meta['positives']:,} positive), {meta['users']:,} users, {meta['items']:,} items, "
        f"{meta['first_event'][:10]} .. {meta['last_event'][:10]}. "
        f"{meta['batches']:,} micro-batches of at most {meta['batch_size']} events{limit}; "
        f"every example is scored before the batch holding it trains. "
        f"Ranking: {meta['queries']:,} sampled positives ({meta['rank_sample']:.0%}), each "
        "ranked among every item seen so far that the user had not interacted with. "
        f"Seed {meta['seed']}, store `{meta['store']}`, wall time "
        f"{summary['timing']['wall_time_s']:.0f} s.",
        "",
    ]
    plots = meta.get("plots", [])
    outro = ["", "Plots: " + ", ".join(f"`{p}`" for p in plots) + "."] if plots else []
    path.write_text("\n".join(intro) + "\n" + markdown_tables(summary) + "\n".join(outro) + "\n")


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _over_time(summary: Mapping[str, Any], key: str, label: str, path: Path) -> None:
    figure = Figure(figsize=(9, 5))
    axes = figure.add_subplot()
    windows = summary["meta"]["windows"]
    x = list(range(1, len(windows) + 1))
    for name, method in summary["methods"].items():
        values = [float("nan") if v is None else v for v in method["windows"][key]]
        # stale copies often sit on top of `online`: dashes keep both visible
        style = "--" if "sync_interval_s" in method else "-"
        axes.plot(x, values, style, marker="o", markersize=3, label=name)
    axes.set_xticks(x, [w["until"][:10] for w in windows], rotation=45, ha="right")
    axes.set_xlabel("window (end date), equal event counts")
    axes.set_ylabel(label)
    axes.set_title(f"{label} per window, predictions made before training")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)


def _rows_vs_auc(summary: Mapping[str, Any], path: Path) -> None:
    figure = Figure(figsize=(11, 4.5))
    for index, (sweep, title) in enumerate(
        (("admission", "admission min_count"), ("expiry", "event-time expiry"))
    ):
        axes = figure.add_subplot(1, 2, index + 1)
        entries = [e for e in summary["sweeps"][sweep] if e["auc"] is not None]
        axes.plot([e["rows"] for e in entries], [e["auc"] for e in entries], "o-")
        for e in entries:
            axes.annotate(
                e["setting"],
                (e["rows"], e["auc"]),
                fontsize=8,
                textcoords="offset points",
                xytext=(4, 4),
            )
        axes.set_xlabel("rows kept at the end (user + item tables)")
        axes.set_ylabel("AUC")
        axes.set_title(f"rows vs AUC: {title}")
        axes.grid(alpha=0.3)
    _save(figure, path)


def write_plots(summary: Mapping[str, Any], out: Path) -> list[str]:
    """Draw `PLOT_FILES` into `out`.

    Returns:
        The file names written.
    """
    k = summary["meta"]["k"]
    _over_time(summary, "auc", "AUC", out / PLOT_FILES[0])
    _over_time(summary, f"recall_at_{k}", f"Recall@{k}", out / PLOT_FILES[1])
    _rows_vs_auc(summary, out / PLOT_FILES[2])
    return list(PLOT_FILES)
