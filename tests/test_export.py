"""`quhao export ratings`: 好差评 records from a hall's log built through the real engine
and store; the touch screen's channel; stable ids; a re-export is identical."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hall.engine import Engine
from hall.export import FIELDS, record_id
from hall.store import Store
from quhao.config import load
from tests.helpers import ROOT, SITE

NINE = 1795395600.0  # 2026-11-23 09:00 in Asia/Shanghai, a Monday
S001 = {"staff": "S001", "pin": "1111"}
S002 = {"staff": "S002", "pin": "2222"}


class Log:
    """A hall's record made as the hall makes it: decide, then commit the batch."""

    def __init__(self, folder: Path) -> None:
        self.config = load(SITE)
        self.engine = Engine(self.config, b"export-test")
        self.store = Store(folder / "hall.sqlite", site=self.config.site.id)
        self.n = 0

    def ask(self, device: str, action: str, at: float, **payload: Any) -> dict[str, Any]:
        outcome = self.engine.handle(device, action, payload, at)
        assert outcome.error is None, (action, outcome.error)
        touched = {e.data["ticket"] for e in outcome.events if "ticket" in e.data}
        self.n += 1
        self.store.commit(
            outcome.events,
            [self.engine.tickets[t] for t in touched],
            [(device, f"r{self.n}", at, {"ok": True})],
        )
        return outcome.response


def export(folder: Path, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "cli", "export", "ratings", "--config", str(SITE), "--db",
         str(folder / "hall.sqlite"), "--from", "2026-11-23", "--to", "2026-11-24", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    return run.stdout


def test_ratings_export_with_channels_follow_up_and_stable_ids(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.ask("counter-W1", "login", NINE, **S001)
    levels = [(5, "counter-W1", ""), (2, "rater-W1", "等太久"), (None, "counter-W1", ""),
              (4, "rater-W1", "")]  # fmt: skip
    for n, (level, rater, reason) in enumerate(levels):
        at = NINE + 600 * n
        number = log.ask("kiosk-K1", "issue", at, service="social",
                         person={"key": f"{n + 1:064x}"})["ticket"]["number"]  # fmt: skip
        log.ask("counter-W1", "call", at + 60)
        log.ask("counter-W1", "finish", at + 300)
        log.ask(rater, "rate", at + 310, ticket=number, level=level, reason=reason)
    first = export(tmp_path)
    rows = [json.loads(line) for line in first.splitlines()]
    assert [r["level"] for r in rows] == [5, 2, 4]  # unrated is no rating
    assert [r["channel_name"] for r in rows] == ["现场评价器", "触摸屏", "触摸屏"]
    bad = rows[1]
    assert bad["level_name"] == "不满意" and bad["reason"] == "等太久"
    assert bad["followup"] == "open" and bad["case"] == "C20261123-A002"
    assert bad["matter"] == "社保业务"  # the service's name from the site
    assert bad["clerk_id"] == "S001" and bad["window"] == 1
    assert rows[0]["followup"] == "none" and rows[0]["reason"] == ""
    assert set(rows[0]) == set(FIELDS)
    seq = log.store.db.execute(
        "SELECT seq FROM events WHERE type = 'ticket.rated' AND json_extract(data, '$.level') = 2"
    ).fetchone()[0]
    assert bad["record_id"] == record_id("testhall", "2026-11-23/A002", seq)
    assert export(tmp_path) == first  # a re-export: the same bytes

    # followed up: the same ids, the state moves on
    log.ask("office", "case_update", NINE + 7200, case="C20261123-A002", state="contacted",
            note="回访", by=S002)  # fmt: skip
    log.ask("office", "case_update", NINE + 7300, case="C20261123-A002", state="resolved",
            note="已致歉", by=S002)  # fmt: skip
    again = [json.loads(line) for line in export(tmp_path).splitlines()]
    assert [r["record_id"] for r in again] == [r["record_id"] for r in rows]
    assert again[1]["followup"] == "on_time" and again[1]["case_state"] == "resolved"

    table = list(csv.DictReader(io.StringIO(export(tmp_path, "--format", "csv"))))
    assert [r["record_id"] for r in table] == [r["record_id"] for r in rows]
    assert table[1]["channel_name"] == "触摸屏" and table[1]["followup"] == "on_time"
    log.store.close()
