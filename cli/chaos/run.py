"""The chaos run: load, malformed floods, SIGKILLs, broker restarts, damaged records, a
full and a read-only disk, and midnight — then the checks and the figures.

Phases, on one broker and one hall state directory unless said otherwise:

1. **latency before**: one probe kiosk, sequential good requests on a quiet hall;
2. **fuzz**: the malformed requests (`cli.chaos.fuzz`) from fuzzer processes while the
   load runs, so malformed and good requests share batches; the hall must not crash
   (same process, no traceback in its log) and every good request must be answered;
3. **latency after**: the same probe again; the p50 ratio after/before must be near 1;
4. **kills**: the load again while the hall is SIGKILLed (at random moments while it
   serves, and now and then while it starts) and restarted, and the broker is killed
   and restarted; retained requests wait on the broker for every new hall, which must
   ignore them;
5. **damaged records** (`cli.chaos.storage`): the hall refuses a missing, empty, foreign,
   damaged or older database and a second hall on the same directory (exit 78), and
   starts again on the restored record;
6. **full and read-only disk** on a small tmpfs (root only; skipped otherwise);
7. **midnight** (`cli.chaos.midnight`), for both day-end policies;
8. **checks** (`cli.chaos.check`) over every record file and database.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from cli.bench.baseline import ECHO_SITE, start_echo
from cli.chaos import midnight, storage
from cli.chaos.check import Findings, check_records, snapshot
from cli.chaos.clients import LoadSpec, Requester, raw_client
from cli.chaos.fuzz import CASE_NAMES, FuzzSpec, fuzz_process
from cli.chaos.procs import Broker, HallProc, Load
from cli.chaos.site import LOAD_SERVICES, WINDOW_SERVICES, chaos_site, write_site
from hall.record import DATABASE

SITE_ID = "chaos"


@dataclass(frozen=True)
class Plan:
    kills: int = 100  # SIGKILLs of a serving hall
    start_kill_every: int = 8  # and every Nth restart is killed again while it starts
    kiosks: int = 6
    counters: int = 3
    malformed: int = 30_000
    fuzzers: int = 2
    broker_restarts: int = 4
    probes: int = 300  # good requests timed before and after the fuzz
    kill_gap_s: tuple[float, float] = (0.3, 1.5)  # a serving hall lives this long
    think_s: float = 0.02  # a load client's pause between requests
    latency_limit: float = 1.5  # p50 after / before the fuzz
    damaged: bool = True
    storage: bool = True
    midnight: bool = True
    midnight_lead_s: float = 4.0  # hall seconds before midnight at the hall's start
    seed: int = 1

    @classmethod
    def short(cls) -> Plan:
        """The version `make test` runs: every phase, small counts."""
        return cls(
            kills=8,
            start_kill_every=4,
            kiosks=6,
            counters=2,
            malformed=3_000,
            broker_restarts=1,
            probes=120,
            kill_gap_s=(0.2, 0.8),
            think_s=0.03,
            latency_limit=2.0,
            midnight_lead_s=3.0,
        )


@dataclass
class ChaosResult:
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    work: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class ChaosRun:
    def __init__(self, plan: Plan, work: Path, say: Callable[[str], None]) -> None:
        self.plan, self.work, self.say = plan, work, say
        self.rng = random.Random(plan.seed)
        self.result = ChaosResult(work=work)
        self.site = chaos_site(SITE_ID, plan.kiosks, plan.counters, plan.fuzzers)
        self.config = write_site(work / "site.toml", self.site)
        self.records = work / "records" / "main"
        self.state = work / "state"
        self.broker = Broker(work / "broker")
        self.hall = HallProc(self.config, self.broker.url, self.state, work / "logs" / "hall.log")
        self.figures = self.result.figures
        self.figures.update(kills=0, start_kills=0, broker_restarts=0)
        self.snapshot = work / "older-copy.sqlite"

    def problem(self, text: str) -> None:
        self.result.problems.append(text)
        self.say(f"  PROBLEM: {text}")

    # ---- phases -------------------------------------------------------------

    def run(self) -> ChaosResult:
        began = time.monotonic()
        echo, echo_stop = start_echo(self.broker.url)
        try:
            if not self.hall.start():
                raise RuntimeError(f"the hall did not start: {self.hall.new_output()[-800:]!r}")
            self.latency("before")
            self.fuzz_phase()
            self.latency("after")
            echo_stop.set()  # before the broker restarts: it has done its part
            echo.join(10)
            self.copy_older_record()
            self.kill_phase()
            self.final_checks()
            if self.plan.damaged:
                self.say("damaged records …")
                storage.damaged_records(self)
            if self.plan.storage:
                self.say("full and read-only disk …")
                storage.disk_phase(self)
            if self.plan.midnight:
                for policy in ("expire", "carry_over"):
                    self.say(f"midnight ({policy}) …")
                    midnight.midnight_phase(self, policy)
        finally:
            echo_stop.set()
            echo.join(10)
            self.hall.kill()
            self.broker.close()
            self.figures["wall_s"] = round(time.monotonic() - began, 1)
        return self.result

    def load_specs(self, phase: str) -> list[LoadSpec]:
        specs = []
        for n, kiosk in enumerate(self.site.kiosks):
            specs.append(
                LoadSpec(
                    self.broker.port,
                    SITE_ID,
                    kiosk,
                    "kiosk",
                    phase,
                    str(self.records / f"{phase}-{kiosk}.jsonl"),
                    self.plan.seed * 1000 + n,
                    self.plan.think_s,
                    LOAD_SERVICES,
                )
            )
        for n, (counter, window) in enumerate(self.site.counters):
            specs.append(
                LoadSpec(
                    self.broker.port,
                    SITE_ID,
                    counter,
                    "counter",
                    phase,
                    str(self.records / f"{phase}-{counter}.jsonl"),
                    self.plan.seed * 1000 + 500 + n,
                    0.0,
                    LOAD_SERVICES,
                    WINDOW_SERVICES[window],
                )
            )
        return specs

    def latency(self, when: str) -> None:
        """p50 of good requests to the hall, and of the same requests to a bare MQTT v5
        echo responder interleaved with them: the echo shows how busy the machine is at
        that moment (other work on a shared machine moves both alike)."""
        probe = Requester(
            self.broker.port, SITE_ID, "kiosk-P", self.records / f"probe-{when}.jsonl"
        )
        echo = Requester(self.broker.port, ECHO_SITE, "kiosk-P", None)
        hall_s, echo_s = [], []
        try:
            for n in range(20 + self.plan.probes):
                body = {"service": "enquiry", "person": None}
                asked = probe.ask("issue", body, f"p.{when}.{n}")
                echoed = echo.ask("issue", body, f"e.{when}.{n}")
                if n >= 20 and asked.code == "ok" and asked.attempts == 1:
                    hall_s.append(asked.latency_s)
                if n >= 20 and echoed.final is not None and echoed.attempts == 1:
                    echo_s.append(echoed.latency_s)
        finally:
            probe.close()
            echo.close()
        p50 = statistics.median(hall_s) * 1000 if hall_s else float("nan")
        p50_echo = statistics.median(echo_s) * 1000 if echo_s else float("nan")
        self.figures[f"p50_{when}_ms"] = round(p50, 2)
        self.figures[f"p50_echo_{when}_ms"] = round(p50_echo, 2)
        self.say(
            f"latency {when} the fuzz: p50 {p50:.2f} ms over {len(hall_s)} good requests "
            f"(bare echo beside it: {p50_echo:.2f} ms)"
        )
        if len(hall_s) < self.plan.probes * 0.9:
            self.problem(f"latency {when}: only {len(hall_s)} of {self.plan.probes} answered")

    def fuzz_phase(self) -> None:
        plan = self.plan
        self.say(f"fuzz: {plan.malformed} malformed requests from {plan.fuzzers} processes …")
        pid = self.hall.pid
        load = Load(self.load_specs("f"))
        load.start()
        ctx = load.ctx
        go, readies, procs, results = ctx.Event(), [], [], []
        for index, (kiosk, counter) in enumerate(self.site.fuzz_devices(), start=1):
            result = self.work / f"fuzz-{index}.json"
            results.append(result)
            spec = FuzzSpec(
                self.broker.port,
                SITE_ID,
                index,
                kiosk,
                counter,
                self.site.kiosks,
                plan.malformed // plan.fuzzers + (index <= plan.malformed % plan.fuzzers),
                str(result),
            )
            ready = ctx.Event()
            readies.append(ready)
            procs.append(ctx.Process(target=fuzz_process, args=(spec, ready, go), daemon=True))
        for proc in procs:
            proc.start()
        for ready in readies:
            ready.wait(60)
        began = time.monotonic()
        go.set()
        for proc in procs:
            proc.join(600)
            if proc.is_alive():
                proc.kill()
                self.problem("a fuzzer did not finish within 10 minutes")
        fuzz_s = time.monotonic() - began
        if load.finish():
            self.problem("load clients had to be killed after the fuzz")
        self.tally_fuzz(results, fuzz_s)
        if not self.hall.alive or self.hall.pid != pid:
            self.problem("the hall died during the fuzz")
        crashes = self.hall.new_output().count(b"Traceback")
        self.figures["tracebacks_in_fuzz"] = crashes
        if crashes:
            self.problem(f"{crashes} tracebacks in the hall's log during the fuzz")

    def tally_fuzz(self, results: list[Path], seconds: float) -> None:
        sent: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        broken: list[str] = []
        breaches = 0
        for path in results:
            if not path.exists():
                self.problem(f"fuzzer wrote no result ({path.name})")
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            sent.update(data["sent"])
            for case_codes in data["answered"].values():
                codes.update(case_codes)
            dropped.update(data["dropped"])
            broken += data["broken"]
            breaches += data["broken_count"]
        total = sum(sent.values())
        self.figures.update(
            malformed_sent=total,
            malformed_cases=len(sent),
            malformed_answers=dict(codes),
            malformed_dropped=sum(dropped.values()),
            malformed_breaches=breaches,
            malformed_per_s=round(total / seconds) if seconds else 0,
        )
        self.say(
            f"  {total} malformed in {seconds:.1f} s ({len(sent)} cases): answers {dict(codes)}, "
            f"dropped {sum(dropped.values())}, rule breaches {breaches}"
        )
        missing = set(CASE_NAMES) - set(sent)
        if missing:
            self.problem(f"malformed cases never sent: {sorted(missing)}")
        if total < self.plan.malformed:
            self.problem(f"only {total} of {self.plan.malformed} malformed requests sent")
        if breaches:
            self.problem(f"{breaches} malformed requests broke a rule: {broken[:8]}")

    def copy_older_record(self) -> None:
        """A consistent copy of the record now: later, an 'older copy' put back by mistake."""
        snapshot(self.state / DATABASE, self.snapshot)

    # ---- kills ----------------------------------------------------------------

    def kill_phase(self) -> None:
        plan = self.plan
        self.say(
            f"kills: {plan.kills} SIGKILLs of the hall under load ({plan.kiosks} kiosks, "
            f"{plan.counters} counters), {plan.broker_restarts} broker restarts …"
        )
        load = Load(self.load_specs("k"))
        load.start()
        every = max(1, plan.kills // (plan.broker_restarts + 1))
        retained = RetainedBait(self.broker.port, SITE_ID, self.site.fuzz_devices()[0][0])
        restarts = 0
        try:
            for kill in range(1, plan.kills + 1):
                time.sleep(self.rng.uniform(*plan.kill_gap_s))
                if not self.hall.alive:
                    self.problem(f"the hall was not running before kill {kill}")
                    break
                self.hall.kill()
                self.figures["kills"] += 1
                time.sleep(0.2)  # the broker has seen the hall go
                if restarts < plan.broker_restarts and kill % every == 0:
                    self.broker.restart()
                    restarts += 1
                    self.figures["broker_restarts"] = restarts
                retained.plant()
                if plan.start_kill_every and kill % plan.start_kill_every == 0:
                    self.hall.spawn()
                    time.sleep(self.rng.uniform(0.0, 0.6))
                    if self.hall.alive:
                        self.hall.kill()
                        self.figures["start_kills"] += 1
                    elif self.hall.proc is not None and self.hall.proc.returncode != 0:
                        self.refused_after_kill(kill)
                        break
                if not self.hall.start():
                    self.refused_after_kill(kill)
                    break
                if kill % 10 == 0:
                    self.say(f"  {kill} kills")
        finally:
            if not self.hall.alive and not self.hall.start():
                self.problem("the hall did not start after the kills")
            if load.finish():
                self.problem("load clients had to be killed after the kill phase")
            retained.close()
        self.figures["retained_deliveries_ignored"] = self.hall_log_count(
            b"ignored a retained request"
        )
        status = self.hall.stop()
        if status != 0:
            self.problem(f"the hall stopped with status {status} after the kill phase")

    def refused_after_kill(self, kill: int) -> None:
        said = self.hall.new_output().decode("utf-8", "replace").strip().splitlines()[-3:]
        self.problem(f"after kill {kill} the hall would not start: {' / '.join(said)}")

    def hall_log_count(self, what: bytes) -> int:
        with self.hall.log.open("rb") as handle:
            return handle.read().count(what)

    # ---- checks ---------------------------------------------------------------

    def final_checks(self) -> None:
        self.say("checking the records against the hall's database …")
        findings = check_records(self.records, self.state / DATABASE)
        self.report_findings("main", findings)
        db = sqlite3.connect(f"file:{self.state / DATABASE}?mode=ro", uri=True)
        try:
            taken = db.execute(
                "SELECT COUNT(*) FROM requests WHERE rid LIKE 'retained-%'"
            ).fetchone()[0]
        finally:
            db.close()
        self.figures["retained_taken"] = taken
        if taken:
            self.problem(f"{taken} retained requests were decided by a restarted hall")
        crashes = self.hall_log_count(b"Traceback")
        self.figures["tracebacks"] = crashes
        if crashes:
            self.problem(f"{crashes} tracebacks in the hall's log")
        f = self.figures
        before, after = f.get("p50_before_ms"), f.get("p50_after_ms")
        echo_before, echo_after = f.get("p50_echo_before_ms"), f.get("p50_echo_after_ms")
        if before and after and echo_before and echo_after:
            ratio = f["p50_ratio"] = round(after / before, 2)
            # The same ratio with the machine's own slowdown (the echo's) taken out.
            relative = f["p50_ratio_vs_echo"] = round(ratio / (echo_after / echo_before), 2)
            if min(ratio, relative) > self.plan.latency_limit:
                self.problem(
                    f"good requests are slower after the fuzz: p50 {before} → {after} ms "
                    f"(×{ratio}; ×{relative} beside the echo; limit ×{self.plan.latency_limit})"
                )

    def report_findings(self, name: str, findings: Findings) -> None:
        prefix = "" if name == "main" else f"{name}_"
        self.figures.update(
            {
                f"{prefix}requests": findings.requests,
                f"{prefix}attempts": findings.attempts,
                f"{prefix}ok_answers": findings.ok_answers,
                f"{prefix}refusals": dict(findings.refusals),
                f"{prefix}ok_by_action": dict(findings.actions),
                f"{prefix}retried": findings.retried,
                f"{prefix}answers_compared": findings.compared,
                f"{prefix}tickets": findings.tickets_in_db,
                f"{prefix}tickets_answered": findings.tickets_answered,
                f"{prefix}events": findings.events,
                f"{prefix}duplicates": len(findings.duplicates),
                f"{prefix}lost": len(findings.lost),
                f"{prefix}differing": len(findings.differing) + len(findings.store_differs),
                f"{prefix}called_twice": len(findings.called_twice),
            }
        )
        for line in findings.problems():
            self.problem(f"{name}: {line}")


class RetainedBait:
    """Well-formed issue requests left retained on the broker while no hall runs: every
    hall that starts gets them with the retain flag and must ignore them (a stored answer
    for a `retained-…` rid would mean it did not). Planted again after every kill, so
    they survive broker restarts too."""

    def __init__(self, port: int, site: str, device: str) -> None:
        self.topic = f"quhao/{site}/hall/req/{device}/issue"
        self.connected = threading.Event()
        self.client: paho.Client = raw_client(port, device, "bait")
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.loop_start()
        self.planted = 0

    def plant(self) -> None:
        if not self.connected.wait(15):
            raise ConnectionError("the retained-request client cannot reach the broker")
        self.planted += 1
        body = {"rid": f"retained-{self.planted}", "service": "enquiry", "person": None}
        info = self.client.publish(self.topic, json.dumps(body).encode(), qos=1, retain=True)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.publish(self.topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


def run_chaos(
    plan: Plan | None = None,
    work: Path | None = None,
    *,
    keep: bool = False,
    say: Callable[[str], None] = print,
) -> ChaosResult:
    plan = plan or Plan()
    folder = work or Path(tempfile.mkdtemp(prefix="quhao-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def timed(text: str) -> None:
        say(f"[{time.monotonic() - began:6.1f} s] {text}" if not text.startswith(" ") else text)

    timed(f"quhao chaos in {folder}")
    result = ChaosRun(plan, folder, timed).run()
    report(plan, result, say)
    if result.ok and not keep and work is None:
        shutil.rmtree(folder, ignore_errors=True)
        result.work = None
    return result


def report(plan: Plan, result: ChaosResult, say: Callable[[str], None]) -> None:
    f = result.figures
    p50 = (
        f"{f.get('p50_before_ms')} ms → {f.get('p50_after_ms')} ms (×{f.get('p50_ratio')}); "
        f"bare echo {f.get('p50_echo_before_ms')} → {f.get('p50_echo_after_ms')} ms"
    )
    rows = [
        ("hall SIGKILLs", f"{f['kills']} while serving, {f['start_kills']} while starting"),
        ("broker restarts", f["broker_restarts"]),
        ("load", f"{plan.kiosks} kiosk and {plan.counters} counter processes"),
        ("good requests", f"{f.get('requests', 0):,} ({f.get('attempts', 0):,} sends)"),
        ("ok answers", f"{f.get('ok_answers', 0):,}; refusals {f.get('refusals', {})}"),
        ("ok by action", f.get("ok_by_action")),
        (
            "retried with the same rid",
            f"{f.get('retried', 0):,} requests; {f.get('answers_compared', 0):,} rids with "
            "several answers, all identical"
            if not f.get("differing")
            else f"{f.get('differing')} DIFFER",
        ),
        ("tickets in the database", f"{f.get('tickets', 0):,}"),
        ("duplicates", f.get("duplicates")),
        ("lost", f.get("lost")),
        ("differing answers", f.get("differing")),
        ("called twice", f.get("called_twice")),
        ("malformed sent", f"{f.get('malformed_sent', 0):,} ({f.get('malformed_cases')} cases)"),
        (
            "malformed answers",
            f"{f.get('malformed_answers')}; dropped {f.get('malformed_dropped')}",
        ),
        ("malformed rule breaches", f.get("malformed_breaches")),
        (
            "retained requests",
            f"{f.get('retained_deliveries_ignored')} deliveries ignored, "
            f"{f.get('retained_taken')} taken",
        ),
        ("latency p50 before/after", p50),
    ]
    rows += [(name, value) for name, value in f.get("phases", {}).items()]
    rows.append(("wall time", f"{f.get('wall_s')} s"))
    say("\n== quhao chaos ==")
    for name, value in rows:
        say(f"{name:26}{value}")
    for skipped in result.skipped:
        say(f"skipped: {skipped}")
    say("result: " + ("OK" if result.ok else f"{len(result.problems)} PROBLEMS"))
    for line in result.problems:
        say(f"  - {line}")
    say(json.dumps({**f, "ok": result.ok}, ensure_ascii=False, separators=(",", ":")))
