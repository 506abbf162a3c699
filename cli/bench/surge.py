"""`quhao bench surge`: the fastest speed at which the surge day ends with nothing lost.

The surge day (simulators/crowd.py `surge_day`) — 社保 at ~1,400 tickets, normal load
elsewhere, windows opened 8 → 15 → 32 — run through every daemon and simulator at falling speed
factors until one completes with zero lost tickets: every ticket issued ends
finished, skipped or voided, every citizen in line got a ticket or a slip, and
every number called was one a citizen held.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from cli.demo import run_demo

SPEEDS = (480.0, 240.0, 120.0, 60.0)


def run_surge_bench(speeds: tuple[float, ...] = SPEEDS) -> dict[str, Any]:
    tried = []
    fastest = None
    for speed in speeds:
        out = Path(tempfile.mkdtemp(prefix=f"quhao-surge-{speed:g}-"))
        result = run_demo("surge", speed=speed, out=out, live=False, render=False, fail_fast=True)

        s = result.stats
        ok = (
            result.lost == 0
            and s.kiosk_failures == 0
            and s.unknown_calls == 0
            and not result.leftovers
        )
        tried.append(
            {
                "speed": speed,
                "ok": ok,
                "tickets": sum(result.tickets.values()),
                "lost": result.lost,
                "kiosk_failures": s.kiosk_failures,
                "unknown_calls": s.unknown_calls,
                "wall_s": round(result.wall_s, 1),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
        if ok:
            fastest = speed
            break
    print("\nsurge day (社保 ~1,400 tickets, windows 8 → 15 → 32)")
    for run in tried:
        print(
            f"  ×{run['speed']:<5g} {'complete' if run['ok'] else 'incomplete':12}"
            f" tickets {run['tickets']}, lost {run['lost']}, kiosk failures "
            f"{run['kiosk_failures']}, {run['wall_s']} s"
        )
    print(f"fastest complete speed: ×{fastest:g}" if fastest else "no speed completed")
    return {"benchmark": "surge.fastest_speed", "fastest_speed": fastest, "runs": tried}
