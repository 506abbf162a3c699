"""The demo's live view: what the day looks like now, drawn with rich.

`render(snapshot)` is pure (a `Snapshot` in, a renderable out) so it can be drawn into
a recording Console of any width in a test. Its height never depends on the number of
windows (a window grid taller than the terminal is what leaves stale lines behind in
a live display), and every number sits in a cell of its own that is never cut: at 80
columns the figures wrap onto more lines, at 200 they share one.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class ServiceRow:
    name: str
    waiting: int
    est_wait_min: int
    issued: int  # the last number issued today
    busy: int  # windows serving a citizen now
    windows: int  # windows open for the service


@dataclass(frozen=True)
class Snapshot:
    title: str  # e.g. "surge day ×300"
    clock: str  # hall time, HH:MM
    done: float  # share of the opening hours gone, 0..1
    phase: str  # starting | open | closed: serving the tickets issued | over
    figures: tuple[tuple[str, int], ...]  # (label, value): arrived, tickets, served, …
    services: tuple[ServiceRow, ...]


def render(snapshot: Snapshot) -> RenderableType:
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True)
    head.add_column(no_wrap=True)
    head.add_column(ratio=1)
    head.add_row(
        Text(snapshot.title, style="bold"),
        Text(f"{snapshot.clock}  {snapshot.done:4.0%}", style="cyan"),
        ProgressBar(total=1.0, completed=snapshot.done),
    )
    phase = Text(snapshot.phase, style="dim")
    figures = Columns(
        [
            Text.assemble((f"{label} ", "dim"), (str(value), "bold"))
            for label, value in snapshot.figures
        ],
        padding=(0, 2),
    )
    table = Table(expand=False, pad_edge=False, box=None, header_style="bold dim")
    table.add_column("service", no_wrap=True, overflow="ellipsis", max_width=16)
    for column in ("waiting", "est. wait", "issued", "windows busy"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in snapshot.services:
        table.add_row(
            row.name,
            str(row.waiting),
            f"{row.est_wait_min} min",
            str(row.issued),
            f"{row.busy}/{row.windows}",
        )
    return Group(head, phase, figures, Text(""), table)
