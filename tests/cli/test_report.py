"""Report rendering: a real PNG, a self-contained HTML page, clear errors."""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from kpl import report
from kpl.loadgen import LoadStats, summarize, timeline_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run() -> tuple[dict[str, Any], list[dict[str, float]]]:
    stats = LoadStats(start=0.0)
    for i in range(300):
        stats.on_sent(100)
        stats.on_acked(100, 0.001 + (i % 10) / 1000, [None], now=i / 100)
    stats.on_sent(100)
    stats.on_failed("InternalFailure", ["InternalFailure"], now=2.5)
    summary = summarize(
        stats,
        end=3.0,
        kinesis_records=3,
        put_records_calls=3,
        settings={"stream": "s<&>", "shards": 2, "records": 301},
    )
    return summary, timeline_rows(stats)


def test_png_report(tmp_path: Path) -> None:
    summary, rows = _run()
    target = tmp_path / "run.png"
    report.render_report(target, summary, rows)
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    summary, rows = _run()
    target = tmp_path / "run.html"
    report.render_report(target, summary, rows)
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    parser = _Collector()
    parser.feed(page)
    assert {"html", "head", "body", "svg", "table"} <= set(parser.tags)
    text = " ".join(parser.text)
    # The settings are on the page, escaped.
    assert "s<&>" in text
    assert "s&lt;&amp;&gt;" in page
    assert "InternalFailure" in text
    # Nothing loaded from elsewhere: links only to fragments of the inline SVG.
    assert "src=" not in page
    assert re.findall(r'href="([^#][^"]*)"', page) == []
    assert 'href="#' in page


@pytest.mark.parametrize("name", ["run.txt", "run", "run.svg"])
def test_unknown_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(report.ReportError, match=r"\.html or \.png"):
        report.check_report_target(tmp_path / name)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match="no directory"):
        report.check_report_target(tmp_path / "nope" / "run.png")


def test_missing_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "matplotlib" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(report.ReportError, match=r"pip install 'kpl\[report\]'"):
        report.check_report_target(tmp_path / "run.png")
