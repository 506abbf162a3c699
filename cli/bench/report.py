"""`quhao bench report`: the month's period report (`quhao report --month`) over 30 days
of a 2,000-ticket-a-day hall made through the real engine and store (hall/monthsim.py):
the time to read, compute and write it (HTML and CSV) and its peak memory, each run in a
fresh process, as `quhao report` runs. The month is made once and reused from the
temporary directory; the time it took to make is printed apart. Target: under 5 s."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from hall.monthsim import MonthSpec, cached_month, default_cache
from hall.periods import parse_period, period_report
from hall.periods_html import write
from quhao.config import load

TARGET_S = 5.0
MONTH = "2026-11"


def measure(folder: Path, out: Path, traced: bool = False) -> dict[str, Any]:
    """One month report of the record in `folder`, in this (fresh) process."""
    config = load(folder / "site.toml")
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if traced:
        tracemalloc.start()
    started, cpu = time.perf_counter(), time.process_time()
    report = period_report(folder / "hall.sqlite", parse_period(month=MONTH), config)
    computed = time.perf_counter()
    write(report, out)
    done = time.perf_counter()
    result: dict[str, Any] = {
        "ms": round((done - started) * 1000, 1),
        "cpu_ms": round((time.process_time() - cpu) * 1000, 1),
        "read_compute_ms": round((computed - started) * 1000, 1),
        "write_ms": round((done - computed) * 1000, 1),
        "tickets": report.hall.tickets,
        "rss_before_mb": round(before_kb / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if traced:
        result["traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return result


def _fresh(folder: Path, out: Path, traced: bool = False) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "cli.bench.report", str(folder), str(out), *(["traced"] * traced)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def run_report_bench(
    per_day: int = 2000, cache: Path | None = None, runs: int = 3
) -> dict[str, Any]:
    spec = MonthSpec(days=30, per_day=per_day)
    folder = cache or default_cache(spec)
    print(f"month: {folder} (30 days of {per_day:,} tickets; made once, then reused)")
    started = time.perf_counter()
    month = cached_month(folder, spec, progress=lambda line: print(f"  making: {line}"))
    reused = time.perf_counter() - started < month.build_s / 2
    db_mb = month.database.stat().st_size / 1e6
    print(
        f"  {month.tickets:,} tickets, {month.events:,} events, {db_mb:,.0f} MB; made through "
        f"the engine in {month.build_s:,.1f} s{' (earlier; reused now)' if reused else ''}"
    )
    with tempfile.TemporaryDirectory(prefix="quhao-period-") as tmp:
        timed = [_fresh(folder, Path(tmp)) for _ in range(runs)]
        traced = _fresh(folder, Path(tmp), traced=True)
    best = min(timed, key=lambda r: r["ms"])
    results = {
        "benchmark": "report.month",
        "days": 30,
        "per_day": per_day,
        "tickets": month.tickets,
        "events": month.events,
        "database_mb": round(db_mb, 1),
        "generation_s": month.build_s,
        "report": best,
        "runs_ms": [r["ms"] for r in timed],
        "load_average": round(os.getloadavg()[0], 1),
        "traced_peak_mb": traced["traced_peak_mb"],
    }
    print(f"\nmonth report ({MONTH}: {best['tickets']:,} tickets), best of {runs} fresh processes")
    every = ", ".join(f"{r:,.0f}" for r in results["runs_ms"])
    print(
        f"  {best['ms'] / 1000:.2f} s  (read + compute {best['read_compute_ms']:,.0f} ms, "
        f"HTML + CSV {best['write_ms']:,.0f} ms; runs {every} ms); CPU {best['cpu_ms']:,.0f} ms"
    )
    print(
        f"  peak memory: {best['peak_rss_mb']:.0f} MB resident ({best['rss_before_mb']:.0f} MB "
        f"before the report: the interpreter and imports); Python allocations at the peak "
        f"{traced['traced_peak_mb']:.0f} MB (tracemalloc, a separate run)"
    )
    print(f"  load average during the runs: {results['load_average']} on {os.cpu_count()} CPUs")
    print(f"  target < {TARGET_S:g} s: {'met' if best['ms'] < TARGET_S * 1000 else 'MISSED'}")
    print(json.dumps(results, separators=(",", ":")))
    return results


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), Path(sys.argv[2]), "traced" in sys.argv[3:])))
