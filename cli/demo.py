"""`quhao demo`: a whole simulated hall day through the real daemons.

A private Mosquitto with the generated (authenticated) configuration, the hall on
SQLite, one kiosk process per ticket machine, counter processes for the windows,
pcscd with vpcd for the PC/SC readers, every device simulator, and the crowd,
which uses only the devices. During a surge, windows are opened live: the site
file grows, the hall re-reads it (SIGHUP) and new counter processes start —
nothing is restarted. At the end the day's report is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from cli.demooffice import SUPERVISOR, Office
from cli.demoscreens import VOICE_SERVICE, Screenshots, screens_site
from quhao.broker import Mosquitto, free_ports
from quhao.brokergen import MONITOR_USER, generate
from quhao.clock import Clock
from quhao.config import SiteConfig, load
from quhao.mqtt import Bus, Message, credentials
from quhao.staffauth import hash_pin
from quhao.topics import Topics
from quhao.wire import BadPayload, decode_object
from simulators.bookings import write_csv
from simulators.crowd import Crowd, KioskDevices, Stats, WindowDevices, hall_time
from simulators.idcard import PORT_ENV, SOCKET_ENV, PcscStack, VirtualIdCard, free_vpcd_port
from simulators.keys import KeypadFeeder
from simulators.led import LedSimulator
from simulators.printer import PrinterSimulator
from simulators.sam import SamSimulator
from simulators.scenario import Scenario, short_day, surge_day

if TYPE_CHECKING:  # rich is imported only when the live view is on
    from rich.live import Live

    from cli.demoview import Snapshot

log = logging.getLogger("cli.demo")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "site.toml"
WINDOWS_PER_COUNTER_PROCESS = 8
STAFF_NAMES = [
    "李敏",
    "王芳",
    "张伟",
    "刘洋",
    "陈静",
    "杨磊",
    "赵丽",
    "黄强",
    "周婷",
    "吴昊",
    "徐娟",
    "孙鹏",
    "马琳",
    "朱军",
    "胡悦",
    "郭涛",
    "何雪",
    "高峰",
    "林琳",
    "罗斌",
    "梁红",
    "宋佳",
    "郑凯",
    "谢颖",
    "韩冰",
    "冯雷",
    "邓超",
    "曹阳",
    "彭丽",
    "曾伟",
    "肖静",
    "田野",
    "董洁",
    "袁媛",
    "潘磊",
    "蒋涛",
    "蔡琴",
    "余强",
    "杜鹃",
    "叶青",
    "吕梅",
    "苏航",
    "卢琳",
    "蒋欣",
    "魏东",
    "薛慧",
    "程刚",
    "沈晨",
    "姚远",
    "方圆",
    "金玲",
    "丁宁",
    "任杰",
    "钟敏",
    "汪洋",
    "范婷",
    "陆鸣",
    "石磊",
    "廖芳",
    "夏雨",
]

# Start-up of the daemons before the doors open: the clock is anchored so that hall time
# reaches the scenario's start (five minutes before opening) this long after launch
# (real seconds: a fixed part, and a part per Python process on a 2-core machine).
STARTUP_BASE_S = 3.0
STARTUP_PER_PROCESS_S = 0.6
# Windows opened live are set up (site file, broker users, SIGHUP, counter processes) this
# long (real seconds) before the plan's moment, when their clerks log in: a counter
# process takes a few real seconds to start, which is many hall minutes at a high speed.
OPEN_WINDOWS_LEAD_S = 6.0
# Mid-surge (hall time): the screenshots of the board, a window screen and a ticket page.
SCREENSHOTS_AT = dtime(10, 45)
# Mid-surge (hall time) the hall is SIGKILLed and started again this many hall minutes
# later with the same state dir; meanwhile the kiosks issue 离线取号 from their leases.
OUTAGE_AT = dtime(11, 20)
OUTAGE_MINUTES = 10

# Staff PINs of the simulated hall: "1" and the window's three digits (S005 → 1005), as in
# examples/site.toml. Few PBKDF2 rounds: a simulated hall needs no guessing cost, and the
# round count is part of the hash, so the hall checks them as they are.
DEMO_PIN_ITERATIONS = 1000


def demo_pin(number: int) -> str:
    return f"1{number:03d}"


class _Simulator(Protocol):
    """A device simulator the demo started and closes at the end."""

    def close(self) -> None: ...


@dataclass
class DemoResult:
    out: Path
    report: Path | None
    day: str
    stats: Stats
    tickets: dict[str, int]
    surge_windows_called: list[int]
    hall_restarts: int
    wall_s: float
    leftovers: list[str] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C: stopped early, reported what happened
    finished: bool = True  # the day ended (not stopped by its deadline or a failure)
    day_end: float | None = None  # hall time of the last call, finish or skip
    closes: float = 0.0  # hall time tickets stop being issued
    startup_s: float = 0.0  # launch until every kiosk was ready (real)
    windows: dict[str, int] = field(default_factory=dict)  # service -> windows at the end
    outage: tuple[float, float] | None = None  # hall times the hall was killed, restarted
    hall_down_shown: bool = False  # the live view said "hall down" during the outage
    offline_tickets: int = 0  # issued offline by kiosks from their leases
    bookings: dict[str, int] = field(default_factory=dict)  # kind -> bookings imported
    appointments: dict[str, int] = field(default_factory=dict)  # checked_in, no_show (hall)
    followed_up: list[str] = field(default_factory=list)  # cases contacted and resolved
    period: Path | None = None  # the period report's folder

    @property
    def lost(self) -> int:
        """Tickets not ended: anything but finished, skipped or voided."""
        return sum(
            n
            for status, n in self.tickets.items()
            if status not in ("finished", "skipped", "voided")
        )


class DemoHall:
    def __init__(
        self,
        scenario: Scenario,
        out: Path,
        speed: float,
        seed: int = 7,
        live: bool | None = None,
        render: bool = True,
    ) -> None:
        self.scenario, self.out, self.speed, self.seed = scenario, out.resolve(), speed, seed
        self.live = sys.stdout.isatty() if live is None else live
        self.render = render
        self.fail_fast = False  # the surge benchmark stops a run at its first failure
        self.base = load(EXAMPLE)
        self.tz = self.base.site.timezone
        self.clock = Clock(origin_hall=hall_time(scenario, self.tz), speed=speed)  # see run()
        self.dev = self.out / "dev"
        self.config: SiteConfig | None = None  # the day's site as last written
        self.env: dict[str, str] | None = None  # the daemons' environment (None: ours)
        self.interrupted = False
        self.finished = False
        self.opened_live: list[int] = []  # windows opened during the day
        self.startup_s = 0.0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.windows: list[tuple[int, str]] = []  # (number, service) opened so far
        self.pin_hashes: dict[int, str] = {}  # window (= staff) number -> PIN hash
        self.crowd: Crowd | None = None
        self.broker: Mosquitto | None = None
        self.pcsc: PcscStack | None = None
        self.sims: list[_Simulator] = []
        self.shots: Screenshots | None = None
        self.outage: list[float] = []  # hall times: killed, restarted
        self.hall_down_shown = False
        self.office: Office | None = None

    # ---- the site of the day ------------------------------------------------

    def _initial_windows(self) -> list[tuple[int, str]]:
        others = [s for s in self.scenario.windows if s != self.scenario.surge_service]
        windows = []
        for service in others:
            windows += [(0, service)] * self.scenario.windows[service]
        if self.scenario.surge_service:
            windows += [(0, self.scenario.surge_service)] * self.scenario.windows[
                self.scenario.surge_service
            ]
        return [(i + 1, s) for i, (_, s) in enumerate(windows)]

    def _site_text(self) -> str:
        base, sc = self.base, self.scenario
        lines = [
            "# Generated by `quhao demo` for one simulated day.",
            "[site]",
            f'id = "{base.site.id}"',
            f'name = "{base.site.name}"',
            f'timezone = "{self.tz.key}"',
            f'hours = ["{sc.opens:%H:%M}-{sc.closes:%H:%M}"]',
            # Hours are when tickets are issued; everyone holding one is served that day.
            f"expire_after_minutes = {24 * 60 - (sc.closes.hour * 60 + sc.closes.minute)}",
            'secret_file = "site.secret"',
            "",
            "[queue]",
            "interleave = 3",
            "max_recalls = 3",
            "reinstate_behind = 3",
            "elderly_age = 65",
            # a citizen reaches the rating pad within a fraction of a real second; at a
            # high speed 30 hall seconds would be gone before they do
            f"rating_timeout_s = {max(30, round(2 * self.speed))}",
            "",
            # The hall's per-device rate limits are in real seconds; the simulated people
            # act `speed` times faster than real ones.
            "[cases]",
            f'supervisors = ["{SUPERVISOR}"]',
            "",
            "[limits]",
            f"kiosk = {{ per_s = {1.0 * max(1.0, self.speed):g}, burst = 5 }}",
            f"counter = {{ per_s = {5.0 * max(1.0, self.speed):g}, burst = 20 }}",
            "",
        ]
        for service in base.services.values():
            if service.id not in sc.loads:
                continue
            cap = max(service.daily_cap or 0, int(sc.loads[service.id] * 1.3) + 20)
            quota = (
                "false"
                if service.quota is None
                else f"{{ tickets = {service.quota.tickets}, hours = "
                f"{service.quota.seconds / 3600:g} }}"
            )
            lines += [
                "[[services]]",
                f'id = "{service.id}"',
                f'name = "{service.name}"',
                f'prefix = "{service.prefix}"',
                f"daily_cap = {cap}",
                f"expected_minutes = {sc.minutes[service.id]:g}",
                "max_wait_minutes = 90",
                f"quota = {quota}",
                f"id_required = {'true' if service.id_required else 'false'}",
                "",
            ]
        for number, service_id in self.windows:
            lines += ["[[windows]]", f"number = {number}", f'services = ["{service_id}"]', ""]
            lines += [
                "[[staff]]",
                f'id = "S{number:03d}"',
                f'name = "{STAFF_NAMES[(number - 1) % len(STAFF_NAMES)]}"',
                f'services = ["{service_id}"]',
                "override = true" if number == 1 else "",
                f'cards = ["{0x04A10000 + number:08X}"]',
                f'pin_hash = "{self._pin_hash(number)}"',
                "",
            ]
        lines += screens_site(self.screens_port, [s for s in sc.loads if s != VOICE_SERVICE])
        for k in range(1, sc.kiosks + 1):
            readers = [f'"serial://{self.dev}/sam-K{k}?baud=115200"']
            if k <= sc.pcsc_kiosks:
                readers.insert(0, f'"pcsc://?reader=Virtual%20PCD%2000%20{k - 1:02d}"')
            lines += [
                "[[kiosks]]",
                f'name = "kiosk-K{k}"',
                f"readers = [{', '.join(readers)}]",
                f'keypad = "events://{self.dev}/keys-K{k}.fifo"',
                f'printer = "tcp://127.0.0.1:{self.printer_ports[k]}"',
                "",
            ]
        for number, _ in self.windows:
            lines += [
                "[[counters]]",
                f'name = "counter-W{number}"',
                f"window = {number}",
                f'keypad = "events://{self.dev}/keys-W{number}.fifo"',
                f'display = "serial://{self.dev}/led-{number}?addr={number}"',
                f'rating = "events://{self.dev}/rate-W{number}.fifo"',
                "",
            ]
        return "\n".join(lines)

    def _pin_hash(self, number: int) -> str:
        """One hash per clerk for the whole day: the site file is rewritten as windows open."""
        if number not in self.pin_hashes:
            self.pin_hashes[number] = hash_pin(demo_pin(number), iterations=DEMO_PIN_ITERATIONS)
        return self.pin_hashes[number]

    def _write_site(self) -> SiteConfig:
        site = self.out / "site.toml"
        site.write_text(self._site_text(), encoding="utf-8")
        return load(site)

    # ---- processes ----------------------------------------------------------

    def _daemon(self, name: str, *args: str) -> None:
        """Start one of our daemons (`quhao …`) with the day's site, broker and clock.

        Each in a session of its own: Ctrl-C at the terminal reaches the demo only, which
        then stops every process in order and still writes the report."""
        log_file = (self.out / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                *args,
                "--config",
                str(self.out / "site.toml"),
                "--broker",
                self.broker_url,
                "--credentials",
                str(self.out / "broker" / "credentials"),
                "--clock",
                self.clock.spec(),
                "--log-level",
                "INFO",
            ],
            stdout=log_file,
            stderr=log_file,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )
        log_file.close()

    def _start_counters(self, windows: list[int]) -> None:
        for i in range(0, len(windows), WINDOWS_PER_COUNTER_PROCESS):
            group = windows[i : i + WINDOWS_PER_COUNTER_PROCESS]
            args = ["counter", "--state-dir", str(self.out / "counters")]
            for number in group:
                args += ["--device", f"counter-W{number}"]
            self._daemon(f"counter-W{group[0]}-W{group[-1]}", *args)

    def _window_devices(
        self, number: int, service: str, config: SiteConfig, opens_at: float = 0.0
    ) -> WindowDevices:
        snapshots = self.out / "led" if number <= 2 and self.render else None
        led = LedSimulator(self.dev / f"led-{number}", number, snapshots, snapshot_limit=4).start()
        self.sims.append(led)
        keys = KeypadFeeder(self.dev / f"keys-W{number}.fifo")
        rating = KeypadFeeder(self.dev / f"rate-W{number}.fifo")
        self.sims += [keys, rating]
        digits = {s: str(i + 1) for i, s in enumerate(config.services)}
        return WindowDevices(
            number, service, keys, led, rating, str(number), digits, demo_pin(number), opens_at
        )

    def _open_windows(self, count: int, at: float) -> list[int]:
        """Open surge windows live: site file, hall SIGHUP, new counters. No restarts.
        Their clerks log in at hall time `at`."""
        surge = self.scenario.surge_service
        assert surge is not None
        have = sum(1 for _, s in self.windows if s == surge)
        first = max(n for n, _ in self.windows) + 1
        new = list(range(first, first + max(0, count - have)))
        if not new:
            return []
        self.windows += [(n, surge) for n in new]
        config = self.config = self._write_site()
        self.broker_gen(config)
        assert self.broker is not None
        self.broker.proc.send_signal(signal.SIGHUP)  # Mosquitto re-reads passwd and acl
        self.procs["hall"].send_signal(signal.SIGHUP)  # the hall re-reads the site file
        time.sleep(0.3)
        for number in new:
            assert self.crowd is not None
            devices = self._window_devices(number, surge, config, opens_at=at)
            self.crowd.add_window(devices)
        self._start_counters(new)
        log.info("opened windows %d-%d for %s", new[0], new[-1], surge)
        return new

    def broker_gen(self, config: SiteConfig) -> None:
        generate(
            config,
            self.out / "broker",
            port=self.broker_port,
            tls_port=self.tls_port,
            ws_port=self.ws_port,
            lan_bind="127.0.0.1",
            run_as="root" if os.geteuid() == 0 else "mosquitto",
        )

    # ---- the day ------------------------------------------------------------

    def run(self) -> DemoResult:
        """The whole day: start everything, run the crowd, stop everything, report.

        Ctrl-C (SIGINT) at any point stops every process and reports what happened."""
        began = time.monotonic()
        # Ctrl-C, or SIGTERM from a supervisor: stop in order and report. (Installed here
        # because a shell starts a background job with SIGINT ignored.)
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in before:
            signal.signal(sig, _interrupt)
        try:
            try:
                kiosks = self._start()
                assert self.crowd is not None
                self._wait_until_ready(kiosks)
                self.startup_s = time.monotonic() - began
                log.info(
                    "ready after %.1f s; hall time %s",
                    self.startup_s,
                    datetime.fromtimestamp(self.clock.now(), self.tz).strftime("%H:%M:%S"),
                )
                print(f"Board: {self.board_url}", flush=True)
                assert self.office is not None
                self.office.finish_import()
                self.crowd.start()
                self._watch()
                if self.finished:  # the supervisor calls back a bad rating of the day
                    self.office.follow_up(
                        self.out / "hall" / "hall.sqlite",
                        self.scenario.day.isoformat(),
                        demo_pin(int(SUPERVISOR[1:])),
                    )
            except KeyboardInterrupt:
                self.interrupted = True
                log.warning("interrupted: stopping every process, then the report")
            finally:
                for sig in before:  # a second Ctrl-C must not cut the stopping short
                    signal.signal(sig, signal.SIG_IGN)
                try:
                    if self.shots:
                        self.shots.join()
                    if self.crowd:
                        self.crowd.close()
                finally:
                    self._stop_all()
            return self._result(began, self.opened_live)
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def _start(self) -> dict[int, KioskDevices]:
        """The broker, the simulators and every daemon of the day. The place to add one."""
        sc = self.scenario
        for folder in ("logs", "dev", "tickets", "led"):
            (self.out / folder).mkdir(parents=True, exist_ok=True)
        (self.out / "site.secret").write_text("demo-secret-for-a-simulated-day\n")
        ports = free_ports(sc.kiosks + 4)
        self.broker_port, self.tls_port, self.ws_port = ports[:3]
        self.printer_ports = {k: ports[2 + k] for k in range(1, sc.kiosks + 1)}
        self.screens_port = ports[-1]
        self.windows = self._initial_windows()
        processes = 1 + sc.kiosks + -(-len(self.windows) // WINDOWS_PER_COUNTER_PROCESS)
        # Hall time reaches the day's start once the daemons have had time to start: the
        # doors do not open while they are still importing.
        startup = STARTUP_BASE_S + STARTUP_PER_PROCESS_S * processes
        self.clock = Clock(
            origin_hall=hall_time(sc, self.tz, minutes_before=10),
            origin_real=time.time() + startup,
            speed=self.speed,
        )
        config = self._write_site()
        self.broker_url = f"mqtt://127.0.0.1:{self.broker_port}"
        self.broker_gen(config)
        self.broker = Mosquitto(
            workdir=self.out / "broker",
            port=self.broker_port,
            conf=self.out / "broker" / "mosquitto.conf",
        )
        kiosks = self._kiosk_devices()
        # the daemons of the day
        self._daemon("hall", "hall", "--state-dir", str(self.out / "hall"))
        for k in range(1, sc.kiosks + 1):
            self._daemon(
                f"kiosk-K{k}",
                "kiosk",
                "--device",
                f"kiosk-K{k}",
                "--state-dir",
                str(self.out / "kiosks"),
            )
        self._start_counters([n for n, _ in self.windows])
        self._daemon("screens", "screens")
        # the people of the day
        service_keys = {s: f"KEY_F{i + 1}" for i, s in enumerate(config.services)}
        self.crowd = Crowd(sc, self.clock, self.tz, kiosks, service_keys, self.seed)
        for number, service in self.windows:
            self.crowd.add_window(self._window_devices(number, service, config))
        self.config = config
        # the online hall's bookings, imported while the daemons start
        self.office = Office(self.out, self.broker_url, self.clock.spec(), self.env)
        bookings = write_csv(self.crowd.bookings, self.out / "bookings.csv", self.tz)
        self.office.start_import(bookings)
        self.board_url = f"http://127.0.0.1:{self.screens_port}/board"
        self.shots = (
            Screenshots(
                self.board_url.removesuffix("/board"),
                config.site.id,
                config.read_secret(),
                self.out / "hall" / "hall.sqlite",
                self.out / "screens",
            )
            if self.render  # --no-pictures: no Chromium either
            else None
        )
        return kiosks

    def _kiosk_devices(self) -> dict[int, KioskDevices]:
        sc = self.scenario
        if sc.pcsc_kiosks:
            if SOCKET_ENV in os.environ:  # a pcscd of this process's own (a test worker's)
                self.pcsc = PcscStack(self.out / "pcscd").start()
            else:
                # a pcscd of the day's own, whatever pcscd runs on the machine: named to the
                # kiosks (pcsc-lite reads the socket from the environment)
                sock, port = self.out / "pcscd" / "pcscd.comm", free_vpcd_port()
                self.env = {**os.environ, SOCKET_ENV: str(sock), PORT_ENV: str(port)}
                self.pcsc = PcscStack(self.out / "pcscd", port=port, socket_path=sock).start()
        devices = {}
        for k in range(1, sc.kiosks + 1):
            printer = PrinterSimulator(
                self.out / "tickets" / f"K{k}",
                port=self.printer_ports[k],
                render=self.render and k <= 3,  # pictures for the report: a few are enough
                render_limit=2,
            ).start()
            sam = SamSimulator(self.dev / f"sam-K{k}").start()
            keys = KeypadFeeder(self.dev / f"keys-K{k}.fifo")
            card = (
                VirtualIdCard(self.pcsc.port, slot=k - 1)
                if self.pcsc and k <= sc.pcsc_kiosks
                else None
            )
            self.sims += [printer, sam, keys]
            devices[k] = KioskDevices(keys, sam, printer, card)
        return devices

    def _wait_until_ready(self, kiosks: dict[int, KioskDevices]) -> None:
        """Every kiosk has its readers and every counter its window (from their logs)."""
        deadline = time.monotonic() + 90
        logs = self.out / "logs"
        wanted = {f"kiosk-K{k}.log": "SAM reader ok" for k in kiosks}
        wanted |= {f"{name}.log": "" for name in self.procs if name.startswith("counter-")}
        wanted["screens.log"] = "screens serving"
        windows = {f"counter-W{n}: window {n} ready" for n, _ in self.windows}
        while time.monotonic() < deadline:
            texts = {f: (logs / f).read_text(errors="replace") for f in wanted}
            kiosks_ready = all(mark in texts[f] for f, mark in wanted.items() if mark)
            counter_text = "".join(t for f, t in texts.items() if f.startswith("counter-"))
            if kiosks_ready and all(w in counter_text for w in windows):
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited; see {logs}")
            time.sleep(0.2)
        raise RuntimeError(f"kiosks or counters not ready after 90 s; see {logs}")

    def _watch(self) -> None:
        """Run the day: open windows on plan, show progress, stop when all is done."""
        assert self.crowd is not None
        sc, crowd = self.scenario, self.crowd
        plan = [(sc.at(moment, self.tz), count) for moment, count in sc.surge_plan]
        lead = OPEN_WINDOWS_LEAD_S * self.speed  # hall seconds
        view = _View(self)
        idle_before = False
        closes = sc.at(sc.closes, self.tz)
        # the outage on a full day only: ten minutes of a one-hour day would be most of it
        outage_at = sc.at(OUTAGE_AT, self.tz) if sc.opens < OUTAGE_AT < sc.closes else None
        shots_at = (
            sc.at(SCREENSHOTS_AT, self.tz)
            if sc.opens < SCREENSHOTS_AT < sc.closes
            else ((sc.at(sc.opens, self.tz) + closes) / 2)
        )
        # the day must end within an hour of closing; two hours of hall time is the limit
        limit = self.clock.real_seconds(closes + 2 * 3600 - self.clock.now())
        deadline = time.monotonic() + limit
        with view:
            while time.monotonic() < deadline:
                now = self.clock.now()
                while plan and now >= plan[0][0] - lead:
                    at, count = plan.pop(0)
                    self.opened_live += self._open_windows(count, at)
                if self.shots and now >= shots_at:
                    self.shots.start(window=1)  # window 1's clerk logs in at opening
                if outage_at and now >= outage_at and not self.outage:
                    self._kill_hall(now)
                elif len(self.outage) == 1 and now >= self.outage[0] + OUTAGE_MINUTES * 60:
                    self._restart_hall(now)
                view.update()
                # Over when the crowd has seen every ticket it holds end — or, should it have
                # lost track of one, when the hall has nobody waiting and no window serving
                # twice in a row after every citizen has come and rated.
                idle = now > closes and crowd.settled() and view.hall_idle()
                if now > closes and (crowd.finished() or (idle and idle_before)):
                    self.finished = True
                    break
                idle_before = idle
                if self.fail_fast and (crowd.stats.kiosk_failures or crowd.stats.unknown_calls):
                    log.error("a citizen went without a ticket: this speed is too fast")
                    break
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead and not self.hall_down:
                    raise RuntimeError(f"{', '.join(dead)} died; see {self.out / 'logs'}")
                time.sleep(0.25)
            else:
                log.error("the day did not finish in time; stopping")
            view.update(final=True)

    @property
    def hall_down(self) -> bool:
        return len(self.outage) == 1

    def _kill_hall(self, now: float) -> None:
        """The outage: the hall dies without a word (SIGKILL); the devices go on."""
        self.procs["hall"].kill()
        self.procs["hall"].wait()
        self.outage.append(now)
        log.warning("hall SIGKILLed for %d minutes of hall time", OUTAGE_MINUTES)

    def _restart_hall(self, now: float) -> None:
        """The hall again from the same state dir: it rebuilds its state from its log and
        takes the kiosks' offline tickets as they hand them over."""
        self._daemon("hall", "hall", "--state-dir", str(self.out / "hall"))
        self.outage.append(now)
        log.warning("hall started again after the outage")

    def _stop_all(self) -> None:
        if self.office and self.office.importing and self.office.importing.poll() is None:
            self.office.importing.kill()  # interrupted while importing
            self.office.importing.wait()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop; killing it", name)
                proc.kill()
                proc.wait()
        for sim in self.sims:
            sim.close()
        if self.broker:
            self.broker.close()
        if self.pcsc:
            self.pcsc.stop()

    def _artefacts(self) -> list[tuple[str, Path]]:
        """Pictures from the simulators for the report (a daemon's own go here too)."""
        report = self.out / "report"
        assets = [
            (f"ticket {p.parent.name}", Path(os.path.relpath(p, report)))
            for p in sorted((self.out / "tickets").glob("K*/ticket-000[1-2].png"))[:6]
        ]
        assets += [
            (p.stem, Path(os.path.relpath(p, report)))
            for p in sorted((self.out / "led").glob("*.png"))[:6]
        ]
        assets += [
            (f"screen {p.stem}", Path(os.path.relpath(p, report)))
            for p in sorted((self.out / "screens").glob("*.png"))
        ]
        assets += [
            (f"announcement {p.stem}", Path(os.path.relpath(p, report)))
            for p in sorted((self.out / "voice").glob("*.wav"))[:1]
        ]
        return assets

    def _result(self, began: float, surge_called: list[int]) -> DemoResult:
        import sqlite3

        from hall.report import build, write

        day = self.scenario.day.isoformat()
        db = self.out / "hall" / "hall.sqlite"
        tickets: dict[str, int] = {}
        called_windows: list[int] = []
        day_end = None
        report = None
        offline = 0
        appointments: dict[str, int] = {}
        period = None
        if db.exists():
            with sqlite3.connect(db) as conn:
                tickets = dict(
                    conn.execute(
                        "SELECT status, COUNT(*) FROM tickets WHERE day = ? GROUP BY status",
                        (day,),
                    )
                )
                called_windows = [
                    w
                    for (w,) in conn.execute(
                        "SELECT DISTINCT window FROM tickets WHERE day = ? AND window IS NOT NULL",
                        (day,),
                    )
                ]
                appointments = {
                    kind.removeprefix("appointment."): n
                    for kind, n in conn.execute(
                        "SELECT type, COUNT(*) FROM events WHERE type IN "
                        "('appointment.checked_in', 'appointment.no_show') GROUP BY type"
                    )
                }
                day_end = conn.execute(
                    "SELECT MAX(MAX(COALESCE(finished_at, 0)), MAX(COALESCE(called_at, 0))) "
                    "FROM tickets WHERE day = ?",
                    (day,),
                ).fetchone()[0]
            config = load(self.out / "site.toml")
            names = {s.id: s.name for s in config.services.values()}
            staff = {member.id: member.name for member in config.staff.values()}
            figures = build(db, day, self.tz, names, staff)
            offline = figures.total.offline
            report = write(figures, self.out / "report", self._artefacts())
            if self.office:
                period = self.office.period_report(db, day)
        hall_log = self.out / "logs" / "hall.log"
        hall_text = hall_log.read_text(errors="replace") if hall_log.exists() else ""
        bookings: dict[str, int] = {}
        for booking in self.crowd.bookings if self.crowd else []:
            bookings[booking.kind] = bookings.get(booking.kind, 0) + 1
        windows: dict[str, int] = {}
        for _, service in self.windows:
            windows[service] = windows.get(service, 0) + 1
        return DemoResult(
            self.out,
            report,
            day,
            self.crowd.stats if self.crowd else Stats(),
            tickets,
            sorted(w for w in called_windows if w in surge_called),
            hall_text.count("state rebuilt from") - 1,
            time.monotonic() - began,
            _leftovers(self.out),
            interrupted=self.interrupted,
            finished=self.finished,
            day_end=day_end or None,
            closes=self.scenario.at(self.scenario.closes, self.tz),
            startup_s=self.startup_s,
            windows=windows,
            outage=(self.outage[0], self.outage[1]) if len(self.outage) == 2 else None,
            hall_down_shown=self.hall_down_shown,
            offline_tickets=offline,
            bookings=bookings,
            appointments=appointments,
            followed_up=self.office.followed_up if self.office else [],
            period=period,
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _leftovers(out: Path) -> list[str]:
    """Processes of this run still alive (there should be none)."""
    found = subprocess.run(["pgrep", "-af", str(out)], capture_output=True, text=True).stdout
    ours = {os.getpid(), os.getppid()}
    return [
        line
        for line in found.splitlines()
        if int(line.split()[0]) not in ours and "pgrep" not in line
    ]


class _View:
    """The live terminal view (rich), or a line every few seconds when not on a terminal.

    While the live view is on, the demo's own log goes to logs/demo.log: a line written
    to the terminal under a live display is what leaves stale lines behind."""

    def __init__(self, demo: DemoHall) -> None:
        self.demo = demo
        self.hall: dict[str, Any] = {}
        password, _ = credentials(demo.out / "broker" / "credentials", MONITOR_USER)
        self.bus = Bus(demo.broker_url, MONITOR_USER, username=MONITOR_USER, password=password)
        self.bus.subscribe(Topics(demo.base.site.id).hall_state, self._on_hall)
        self.live: Live | None = None
        self.last_line = 0.0
        self.handlers: list[logging.Handler] = []

    def _on_hall(self, message: Message) -> None:
        with contextlib.suppress(BadPayload):
            self.hall = decode_object(message.payload)

    def __enter__(self) -> _View:
        self.bus.start(required=False)
        if self.demo.live:
            from rich.live import Live

            from cli.demoview import render

            root = logging.getLogger()
            self.handlers = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
            to_file = logging.FileHandler(self.demo.out / "logs" / "demo.log")
            to_file.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            for handler in self.handlers:
                root.removeHandler(handler)
            root.addHandler(to_file)
            self.live = Live(render(self.snapshot()), refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)
            root = logging.getLogger()
            for handler in self.handlers:
                root.addHandler(handler)
        self.bus.stop()

    def hall_idle(self) -> bool:
        """The hall's state says nobody waits and no window serves."""
        services, windows = self.hall.get("services"), self.hall.get("windows")
        if not services:
            return False
        return not any(x.get("waiting") for x in services) and not any(
            w.get("status") == "serving" for w in windows or []
        )

    def snapshot(self) -> Snapshot:
        from cli.demoview import ServiceRow, Snapshot

        demo, sc, tz = self.demo, self.demo.scenario, self.demo.tz
        opens, closes = sc.at(sc.opens, tz), sc.at(sc.closes, tz)
        now = demo.clock.now()
        done = min(1.0, max(0.0, (now - opens) / (closes - opens)))
        crowd = demo.crowd
        s = crowd.stats if crowd else Stats()
        if demo.hall_down:
            phase = "hall down: the kiosks issue 离线取号 from their leases"
            demo.hall_down_shown = True
        elif not crowd or not crowd.threads:
            phase = "starting the daemons and devices"
        elif now < opens:
            phase = "before opening"
        elif now <= closes:
            phase = f"open until {sc.closes:%H:%M}"
        else:
            phase = f"closed at {sc.closes:%H:%M}: serving everyone holding a ticket"
        services = {x["id"]: x for x in self.hall.get("services", [])}
        status = {w["window"]: w["status"] for w in self.hall.get("windows", [])}
        rows = []
        for service in demo.config.services.values() if demo.config else []:
            numbers = [n for n, sid in demo.windows if sid == service.id]
            state = services.get(service.id, {})
            rows.append(
                ServiceRow(
                    service.name,
                    int(state.get("waiting", 0)),
                    int(state.get("estimated_wait_s", 0)) // 60,
                    int(state.get("issued", 0)),
                    sum(1 for n in numbers if status.get(n) == "serving"),
                    len(numbers),
                )
            )
        return Snapshot(
            f"{sc.name} day ×{demo.speed:g}",
            datetime.fromtimestamp(now, tz).strftime("%H:%M"),
            done,
            phase,
            (
                ("arrived", s.arrived),
                ("tickets", s.printed),
                ("served", s.served),
                ("waiting", sum(r.waiting for r in rows)),
                ("no-shows", s.no_shows),
                ("quota slips", s.slips),
                ("transfers", s.transfers),
                ("windows", len(demo.windows)),
            ),
            tuple(rows),
        )

    def update(self, final: bool = False) -> None:
        if self.live:
            from cli.demoview import render

            self.live.update(render(self.snapshot()), refresh=final)
            return
        down_unseen = self.demo.hall_down and not self.demo.hall_down_shown
        if final or down_unseen or time.monotonic() - self.last_line >= 5:
            self.last_line = time.monotonic()
            snap = self.snapshot()
            figures = ", ".join(f"{label} {value}" for label, value in snap.figures)
            down = " — HALL DOWN" if self.demo.hall_down else ""
            print(f"[{snap.clock} {snap.done:4.0%}] {figures}{down}", flush=True)
            if snap.done >= 1.0 and self.demo.crowd and not final:
                print(f"    waiting for: {self.demo.crowd.diagnosis()}", flush=True)


SCENARIOS = {"surge": surge_day, "short": short_day}


# `make demo`'s speed: the surge day in under three minutes on a 2-core machine, start-up
# and report included (docs/architecture.md, "The simulated hall day": what bounds it).
DEFAULT_SPEED = 300.0


def run_demo(
    scenario: str = "surge",
    speed: float = DEFAULT_SPEED,
    out: Path | None = None,
    seed: int = 7,
    day: date | None = None,
    live: bool | None = None,
    render: bool = True,
    fail_fast: bool = False,
) -> DemoResult:
    day = day or date(2026, 11, 23)
    out = out or Path("out") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    demo = DemoHall(SCENARIOS[scenario](day), out, speed, seed, live, render)
    demo.fail_fast = fail_fast
    result = demo.run()
    print("\n" + summary(result, scenario, speed))
    return result


def summary(result: DemoResult, scenario: str, speed: float) -> str:
    """What the day came to, in a few lines for the terminal."""
    s, tz = result.stats, ZoneInfo("Asia/Shanghai")

    def hhmm(at: float | None) -> str:
        return datetime.fromtimestamp(at, tz).strftime("%H:%M") if at else "—"

    def p50(values: list[float]) -> str:
        return f"{sorted(values)[len(values) // 2] * 1000:.0f} ms" if values else "—"

    state = (
        "interrupted (Ctrl-C)"
        if result.interrupted
        else "complete"
        if result.finished
        else "NOT complete"
    )
    outage = (
        f"SIGKILLed {hhmm(result.outage[0])}, back {hhmm(result.outage[1])}"
        if result.outage
        else "none"
    )
    lines = [
        f"{scenario} day {result.day} at ×{speed:g}: {state} in {result.wall_s:.0f} s "
        f"(start-up {result.startup_s:.0f} s)",
        f"  {sum(result.tickets.values())} tickets "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.tickets.items())) or 'none'}); "
        f"{s.arrived} citizens came: {s.printed} ticketed, {s.slips} quota slips, "
        f"{s.closed} turned away closed, {s.kiosk_failures} given nothing; "
        f"{s.unknown_calls} numbers called that nobody held yet",
        f"  tickets stopped {hhmm(result.closes)}; the last citizen left the windows "
        f"{hhmm(result.day_end)}; windows opened live: "
        f"{len(result.surge_windows_called) or 'none'}; windows at the end: "
        f"{sum(result.windows.values())}",
        "  a citizen at a kiosk (real time, p50): "
        + ", ".join(f"{m} {p50(v)} ×{len(v)}" for m, v in sorted(s.kiosk_s.items())),
        f"  keys whose answer the LED did not show in time: {s.led_timeouts or 'none'}",
        f"  hall outage: {outage}; {result.offline_tickets} tickets issued offline "
        f"(离线取号), {result.lost} lost",
        f"  appointments: {sum(result.bookings.values())} booked "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.bookings.items()))}); "
        f"{result.appointments.get('checked_in', 0)} checked in (预约优先, "
        f"{s.checked_in} such tickets read), {result.appointments.get('no_show', 0)} no-shows",
        "  bad ratings followed up (contacted, resolved): "
        + (", ".join(result.followed_up) or "none"),
        f"report: {result.report}",
        f"period report: {result.period}",
    ]
    return "\n".join(lines)
