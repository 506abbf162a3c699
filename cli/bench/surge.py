"""`quhao bench surge`: the fastest speed at which the surge day completes.

The surge day (simulators/scenario.py `surge_day`) — 社保 at ~1,400 citizens, normal load
elsewhere, windows opened 8 → 15 → 32 — run through every daemon and simulator at falling
speed factors until one completes: every ticket issued ends finished, skipped or voided,
every citizen got a ticket or a quota slip (none given nothing, none turned away as
closed), every number called was one a citizen held, the day ended (the last citizen left
the windows) within an hour of closing, and no process was left behind. For each speed
tried it says what fell short, which names the bound (docs/architecture.md).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from cli.demo import DemoResult, run_demo

SPEEDS = (900.0, 600.0, 450.0, 300.0, 200.0, 120.0)


def shortfalls(result: DemoResult) -> list[str]:
    """What kept this run from being complete (empty: complete)."""
    s = result.stats
    out = []
    if result.lost:
        out.append(f"{result.lost} tickets not ended")
    if s.kiosk_failures:
        out.append(f"{s.kiosk_failures} citizens given nothing at a kiosk")
    if s.closed:
        out.append(f"{s.closed} still in a kiosk line at closing time")
    if s.unknown_calls:
        out.append(f"{s.unknown_calls} numbers called that nobody held yet")
    if not result.finished:
        out.append("the day did not end")
    elif result.day_end and result.day_end > result.closes + allowed_after_closing_s(result):
        out.append(
            f"the last citizen left {(result.day_end - result.closes) / 60:.0f} min after closing"
        )
    if result.leftovers:
        out.append(f"{len(result.leftovers)} processes left behind")
    return out


def allowed_after_closing_s(result: DemoResult) -> float:
    """An hour after closing for the last citizen to leave; half an hour more on a day
    with the hall outage (every window stops for its ten minutes, and 社保's line with them)."""
    return 3600 + (1800 if result.outage else 0)


def run_surge_bench(speeds: tuple[float, ...] = SPEEDS) -> dict[str, Any]:
    tried: list[dict[str, Any]] = []
    fastest = None
    for speed in speeds:
        out = Path(tempfile.mkdtemp(prefix=f"quhao-surge-{speed:g}-"))
        result = run_demo("surge", speed=speed, out=out, live=False, render=False, fail_fast=True)
        short = shortfalls(result)
        s = result.stats
        tried.append(
            {
                "speed": speed,
                "ok": not short,
                "tickets": sum(result.tickets.values()),
                "lost": result.lost,
                "kiosk_failures": s.kiosk_failures,
                "unknown_calls": s.unknown_calls,
                "closed": s.closed,
                "day_end_after_closing_min": round((result.day_end - result.closes) / 60)
                if result.day_end
                else None,
                "wall_s": round(result.wall_s, 1),
                "short": short,
            }
        )
        shutil.rmtree(out, ignore_errors=True)
        if not short:
            fastest = speed
            break
    print("\nsurge day (社保 ~1,400 citizens, windows 8 → 15 → 32)")
    for run in tried:
        print(
            f"  ×{run['speed']:<5g} {'complete' if run['ok'] else 'incomplete':12}"
            f" tickets {run['tickets']}, day ended {run['day_end_after_closing_min']} min after"
            f" closing, {run['wall_s']} s"
            + (f": {'; '.join(run['short'])}" if run["short"] else "")
        )
    print(f"fastest complete speed: ×{fastest:g}" if fastest else "no speed completed")
    return {"benchmark": "surge.fastest_speed", "fastest_speed": fastest, "runs": tried}
