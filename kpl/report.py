"""``kpl load --report FILE``: throughput and latency over time as a PNG or an HTML page.

The charts are drawn by matplotlib (the optional ``report`` extra) with its
non-interactive Agg backend: a PNG directly, or an SVG embedded in one self-contained
HTML page together with the run's settings and summary.
"""

from __future__ import annotations

import html
import importlib.util
import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

__all__ = ["ReportError", "check_report_target", "render_report"]

ReportKind = Literal["html", "png"]

_KINDS: Final[dict[str, ReportKind]] = {".html": "html", ".htm": "html", ".png": "png"}
INSTALL_HINT: Final = "pip install 'kpl[report]'"


class ReportError(Exception):
    """The report cannot be made (unknown file type, matplotlib missing, unwritable path)."""


def check_report_target(path: str | Path) -> ReportKind:
    """Check, before a run starts, that a report can be written to ``path``.

    Returns its kind from the suffix; raises :class:`ReportError` with a one-line reason.
    """
    target = Path(path)
    kind = _KINDS.get(target.suffix.lower())
    if kind is None:
        raise ReportError(f"report file must end in .html or .png, got {str(path)!r}")
    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError(f"--report needs matplotlib, which is not installed: {INSTALL_HINT}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ReportError(f"cannot write report {str(path)!r}: no directory {str(parent)!r}")
    return kind


def _title(summary: Mapping[str, Any]) -> str:
    settings = summary.get("settings", {})
    parts = [f"stream {settings.get('stream', '?')}"]
    if settings.get("shards"):
        parts.append(f"{settings['shards']} shards")
    parts.append(f"{summary.get('records_acked', 0):,} records acked")
    parts.append(f"{summary.get('records_per_s', 0):,.0f} records/s")
    return "kpl load: " + ", ".join(parts)


def _figure(summary: Mapping[str, Any], rows: Sequence[Mapping[str, float]]) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5))
    fig.subplots_adjust(left=0.08, right=0.92, top=0.9, bottom=0.17, hspace=0.25)
    throughput, latency = fig.subplots(2, 1, sharex=True)
    t = [r["t_s"] for r in rows]
    throughput.plot(t, [r["records_per_s"] for r in rows], color="tab:blue", label="records/s")
    throughput.set_ylabel("records/s acknowledged")
    throughput.set_ylim(bottom=0)
    throughput.grid(alpha=0.3)
    mb = throughput.twinx()
    mb.plot(t, [r["mb_per_s"] for r in rows], color="tab:green", linestyle="--", label="MB/s")
    mb.set_ylabel("MB/s acknowledged")
    mb.set_ylim(bottom=0)
    failed = [r["failed_per_s"] for r in rows]
    if any(failed):
        throughput.plot(t, failed, color="tab:red", label="failed/s")
    handles = throughput.get_legend_handles_labels()
    more = mb.get_legend_handles_labels()
    throughput.legend(handles[0] + more[0], handles[1] + more[1], loc="lower right")
    throughput.set_title("Throughput")

    latency.plot(t, [r["p50_ms"] for r in rows], color="tab:blue", label="p50")
    latency.plot(t, [r["p99_ms"] for r in rows], color="tab:orange", label="p99")
    latency.set_ylabel("put → acknowledged (ms)")
    latency.set_xlabel("seconds since the first put")
    latency.set_ylim(bottom=0)
    latency.grid(alpha=0.3)
    latency.legend(loc="upper right")
    latency.set_title("Latency")
    fig.suptitle(_title(summary))
    # The settings under the charts, so a PNG passed around still says what was run.
    settings = summary.get("settings", {})
    line = ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
    lat = summary.get("latency_ms", {})
    figures = (
        f"acked {summary.get('records_acked', 0):,} of {summary.get('records_sent', 0):,}, "
        f"failed {summary.get('records_failed', 0):,}, retries {summary.get('retries', 0):,}, "
        f"{summary.get('duration_s', 0):.2f} s; latency p50 {lat.get('p50', 0):.1f} ms, "
        f"p99 {lat.get('p99', 0):.1f} ms, max {lat.get('max', 0):.1f} ms"
    )
    footer = "\n".join([figures, *textwrap.wrap(line, width=150)])
    fig.text(0.01, 0.01, footer, fontsize=8, va="bottom", linespacing=1.4)
    return fig


def _rows_html(items: Mapping[str, Any]) -> str:
    out = []
    for key, value in items.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        out.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>")
    return "\n".join(out)


def _html_page(summary: Mapping[str, Any], svg: str) -> str:
    settings = summary.get("settings", {})
    figures = {k: v for k, v in summary.items() if k != "settings"}
    title = html.escape(_title(summary))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 2em 1em 0; display: inline-table;
         vertical-align: top; }}
th, td {{ text-align: left; padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; }}
th {{ font-weight: 600; }}
svg {{ max-width: 100%; height: auto; }}
</style>
</head>
<body>
<h1>{title}</h1>
<div class="chart">
{svg}
</div>
<table class="settings"><caption>Settings</caption>
{_rows_html(settings)}
</table>
<table class="summary"><caption>Summary</caption>
{_rows_html(figures)}
</table>
</body>
</html>
"""


def render_report(
    path: str | Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, float]]
) -> None:
    """Write the charts of a run to ``path`` (``.png``, or ``.html`` with settings and
    summary). ``rows`` come from :func:`kpl.loadgen.timeline_rows`."""
    kind = check_report_target(path)
    fig = _figure(summary, rows)
    try:
        if kind == "png":
            fig.savefig(path, format="png", dpi=100)
        else:
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg")
            svg = buffer.getvalue()
            # Drop the XML prolog and DOCTYPE: the SVG is inlined into an HTML5 page.
            svg = svg[svg.index("<svg") :]
            Path(path).write_text(_html_page(summary, svg), encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write report {str(path)!r}: {exc.strerror or exc}") from exc
