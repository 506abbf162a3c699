"""The short chaos run: every phase of `make chaos` with small counts (under a minute).

SIGKILLs of the hall under six kiosk and two counter processes, a broker restart,
1,500 malformed requests of every kind, damaged records, a full and a read-only disk
(when this runs as root), midnight under both day-end policies. `cli.chaos.check`
asserts nothing was lost, duplicated, answered twice differently or called twice.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from cli.chaos import Plan, run_chaos
from cli.chaos.fuzz import CASE_NAMES


@pytest.mark.long
@pytest.mark.alone
def test_short_chaos_run(tmp_path: Path) -> None:
    began = time.monotonic()
    said: list[str] = []
    # Plan.short() with fewer kills and malformed requests and a shorter lead to midnight:
    # every phase and every check still runs (a start-up kill, the broker restart, each
    # of the 30 malformed cases many times over, both day-end policies).
    plan = replace(Plan.short(), kills=5, malformed=1_500, midnight_lead_s=2.0)
    result = run_chaos(plan, tmp_path / "chaos", say=said.append)
    transcript = "\n".join(said)
    assert result.ok, transcript
    f = result.figures
    assert f["kills"] >= plan.kills and f["broker_restarts"] == plan.broker_restarts
    assert f["malformed_sent"] >= plan.malformed
    assert f["malformed_cases"] == len(CASE_NAMES) and f["malformed_breaches"] == 0
    assert f["tickets"] > 0 and f["ok_answers"] > 0 and f["retried"] > 0
    assert f["duplicates"] == f["lost"] == f["differing"] == f["called_twice"] == 0
    assert f["retained_taken"] == 0 and f["retained_deliveries_ignored"] > 0
    assert min(f["p50_ratio"], f["p50_ratio_vs_echo"]) <= plan.latency_limit
    assert set(f["ok_by_action"]) >= {"issue", "call", "recall", "skip", "transfer", "finish"}
    phases = f["phases"]
    handled, _, cases = phases["damaged records"].split()[:3]  # "8 of 8 handled …"
    assert handled == cases and int(cases) >= 8, transcript
    assert "midnight expire" in phases and "midnight carry_over" in phases
    assert time.monotonic() - began < 180, transcript
