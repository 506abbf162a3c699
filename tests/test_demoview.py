"""The demo's live view drawn at 80 and 200 columns: every figure whole, no line too wide,
the same height whatever the number of windows (so a live display leaves nothing behind)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from cli.demoview import ServiceRow, Snapshot, render

SERVICES = (
    ServiceRow("社保业务", 1234, 187, 1402, 31, 32),
    ServiceRow("不动产登记", 7, 12, 44, 2, 2),
    ServiceRow("出入境业务", 0, 0, 47, 0, 2),
    ServiceRow("一个名字很长很长很长很长的业务", 3, 5, 9, 1, 1),
)
FIGURES = (
    ("arrived", 18402),
    ("tickets", 18123),
    ("served", 17999),
    ("waiting", 1244),
    ("no-shows", 901),
    ("quota slips", 300),
    ("transfers", 977),
    ("windows", 51),
)


def _draw(width: int, services: tuple[ServiceRow, ...] = SERVICES) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    snapshot = Snapshot(
        "surge day ×300", "17:42", 1.0, "closed at 17:30: serving everyone", FIGURES, services
    )
    console.print(render(snapshot))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 200])
def test_every_number_is_shown_whole(width: int) -> None:
    text = _draw(width)
    flat = re.sub(r"\s+", " ", text)
    for label, value in FIGURES:
        assert f"{label} {value}" in flat, (label, value, text)
    for row in SERVICES:
        line = next(x for x in text.splitlines() if row.name[:4] in x)
        cells = line.split()
        for figure in (str(row.waiting), f"{row.est_wait_min}", str(row.issued)):
            assert figure in cells, (figure, line)
        assert f"{row.busy}/{row.windows}" in cells, line
    assert "17:42" in text and "100%" in text
    assert all(len(line) <= width for line in text.splitlines())


def test_at_200_columns_the_figures_share_one_line() -> None:
    lines = _draw(200).splitlines()
    assert any("arrived 18402" in x and "windows 51" in x for x in lines)


def test_the_height_does_not_grow_with_the_windows() -> None:
    few = _draw(80, SERVICES[:2])
    many = _draw(
        80, tuple(ServiceRow(r.name, r.waiting, 1, r.issued, 90, 99) for r in SERVICES[:2])
    )
    assert len(few.splitlines()) == len(many.splitlines())
