"""The hall office's part of the demo day, through its real commands: the online hall's
bookings imported before opening (`quhao appointments import`), a bad rating followed up
after the day (`quhao cases update … contacted`, then `resolved`) by the supervisor, and
the day's period report (`quhao report --day … --config`) that shows both."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("cli.demo")
ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = "S001"  # 李敏 at window 1, who may also override the quota


@dataclass
class Office:
    """How the demo's office reaches the running hall: the day's site, broker, clock."""

    out: Path
    broker_url: str
    clock: str
    env: dict[str, str] | None = None
    followed_up: list[str] = field(default_factory=list)  # case ids contacted and resolved
    importing: subprocess.Popen[str] | None = None

    def _start(self, *args: str, pin: str | None = None) -> subprocess.Popen[str]:
        env = dict(self.env or os.environ)
        if pin is not None:
            env["QUHAO_PIN"] = pin  # the office's staff PIN, as `quhao cases` reads it
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args, "--config", str(self.out / "site.toml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )

    def _finish(self, proc: subprocess.Popen[str], timeout: float = 60) -> str:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        args = proc.args[3:] if isinstance(proc.args, list) else []
        with (self.out / "logs" / "office.log").open("a", encoding="utf-8") as handle:
            handle.write(f"$ quhao {' '.join(map(str, args))}\n{stdout}{stderr}")
        if proc.returncode:
            log.warning("quhao %s: exit %d: %s", args[:2], proc.returncode, stderr.strip())
        return stdout

    def _run(self, *args: str, pin: str | None = None, timeout: float = 60) -> str:
        return self._finish(self._start(*args, pin=pin), timeout)

    def _asking(self) -> tuple[str, ...]:
        return (
            "--broker",
            self.broker_url,
            "--credentials",
            str(self.out / "broker" / "credentials"),
        )

    def start_import(self, bookings: Path) -> None:
        """Before opening, while the daemons start: the day's bookings into the hall, as
        the office (a Python process takes seconds to start: many hall minutes)."""
        self.importing = self._start(
            "appointments", "import", str(bookings), *self._asking(), "--clock", self.clock
        )

    def finish_import(self) -> str:
        out = self._finish(self.importing).strip() if self.importing else ""
        log.info("bookings: %s", out)
        return out

    def follow_up(self, db: Path, day: str, pin: str) -> list[str]:
        """A bad rating of the day called back and resolved by the supervisor (回访)."""
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT id FROM tickets WHERE day = ? AND rating_state = 'rated' AND rating <= 2 "
                "AND staff IS NOT ? ORDER BY finished_at LIMIT 1",
                (day, SUPERVISOR),
            ).fetchall()
        for (ticket,) in rows:
            case = "C" + ticket.replace("-", "").replace("/", "-")  # C20261123-A003
            for state, note in (
                ("contacted", "电话回访，已致歉并说明原因"),
                ("resolved", "已整改，群众表示认可"),
            ):
                self._run(
                    "cases",
                    "update",
                    case,
                    state,
                    "--note",
                    note,
                    "--staff",
                    SUPERVISOR,
                    *self._asking(),
                    pin=pin,
                )
            self.followed_up.append(case)
        return self.followed_up

    def period_report(self, db: Path, day: str) -> Path:
        """The day's report and, beside it, its period report (cases, appointments)."""
        target = self.out / "period"
        self._run("report", "--day", day, "--db", str(db), "--out", str(target))
        return target
