"""A broken site file is reported with the file, the line and the key of every problem;
`quhao check` reports what the daemons would refuse at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quhao.config import ConfigError, check, load, loads

ROOT = Path(__file__).parent.parent
SITE = ROOT / "tests" / "sites" / "small.toml"
EXAMPLE = ROOT / "examples" / "site.toml"


def error_for(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads(text, "site.toml")
    return info.value


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_example_hall_loads() -> None:
    config = load(EXAMPLE)
    assert config.site.id == "baiyun"
    assert list(config.kiosks) == [f"kiosk-K{i}" for i in range(1, 15)]
    assert list(config.counters) == [f"counter-W{i}" for i in range(1, 26)]
    assert 8 <= len(config.services) <= 12
    with pytest.raises(ConfigError, match="published example secret"):
        config.read_secret()  # a hall that copies the example must not use it silently
    simulated = config.model_copy(
        update={"site": config.site.model_copy(update={"allow_example_secret": True})}
    )
    assert len(simulated.read_secret()) >= 16


def test_check_reports_the_example_secret_and_secret_gen_makes_a_fresh_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cli.main import main

    assert main(["check", "--config", str(EXAMPLE)]) == 2
    assert "published example secret" in capsys.readouterr().err
    assert main(["check", "--config", str(EXAMPLE), "--allow-example-secret"]) == 0
    fresh = tmp_path / "site.secret"
    assert main(["secret", "gen", "--out", str(fresh)]) == 0
    assert fresh.stat().st_mode & 0o777 == 0o600 and len(fresh.read_bytes().strip()) >= 48
    assert main(["secret", "gen", "--out", str(fresh)]) == 2  # never replaced silently
    assert main(["check", "--config", str(EXAMPLE), "--secret-file", str(fresh)]) == 0
    missing = tmp_path / "nope.secret"
    assert main(["check", "--config", str(EXAMPLE), "--secret-file", str(missing)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_wrong_type_names_key_and_line() -> None:
    text = SITE.read_text().replace("daily_cap = 3", 'daily_cap = "three"')
    err = error_for(text)
    assert err.key == "services[1].daily_cap"
    assert err.line == line_of(text, 'daily_cap = "three"')
    assert "must be int" in str(err) and f"site.toml:{err.line}" in str(err)


def test_unknown_key_is_an_error_not_a_silent_default() -> None:
    text = SITE.read_text().replace("interleave = 2", "interleav = 2")
    err = error_for(text)
    assert err.key == "queue.interleav" and err.line == line_of(text, "interleav = 2")


def test_bad_value_inside_inline_table() -> None:
    text = SITE.read_text().replace(
        "quota = { tickets = 2, hours = 2 }", "quota = { tickets = 0, hours = 2 }"
    )
    err = error_for(text)
    assert err.key == "services[0].quota.tickets"
    assert err.line == line_of(text, "tickets = 0")


def test_window_with_unknown_service() -> None:
    text = SITE.read_text().replace('services = ["tax", "enquiry"]', 'services = ["tax", "tea"]')
    err = error_for(text)
    assert err.key == "windows[1].services" and "tea" in err.message
    assert err.line == line_of(text, '"tea"')


def test_duplicate_prefix_and_device_names() -> None:
    err = error_for(SITE.read_text().replace('prefix = "B"', 'prefix = "A"'))
    assert err.key == "services[1].prefix" and "already used" in err.message
    err = error_for(SITE.read_text().replace('name = "kiosk-K2"', 'name = "kiosk-K1"'))
    assert err.key == "kiosks[1].name"


def test_counter_for_a_missing_window() -> None:
    text = SITE.read_text().replace("window = 2", "window = 9")
    err = error_for(text)
    assert err.key == "counters[2].window" and err.line == line_of(text, "window = 9")


def test_toml_syntax_error_has_a_line() -> None:
    text = SITE.read_text().replace('name = "税务业务"', 'name = "税务业务')
    err = error_for(text)
    assert err.line == line_of(text, 'name = "税务业务') and "TOML syntax" in err.message


def test_bad_hours_and_timezone() -> None:
    err = error_for(SITE.read_text().replace('"00:00-24:00"', '"9-17"'))
    assert err.key == "site.hours"
    err = error_for(SITE.read_text().replace("Asia/Shanghai", "Mars/Olympus"))
    assert err.key == "site.timezone" and "Mars/Olympus" in err.message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load("/nonexistent/site.toml")


def test_cli_check_reports_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cli.main import main

    broken = tmp_path / "site.toml"
    broken.write_text(SITE.read_text().replace("max_recalls = 2", "max_recalls = -1"))
    assert main(["check", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert (
        "queue.max_recalls" in err
        and f"{broken}:{line_of(broken.read_text(), 'max_recalls')}" in err
    )
    assert main(["check", "--config", str(EXAMPLE), "--allow-example-secret"]) == 0


def test_texts_keys_and_ticket_template_are_configurable() -> None:
    config = loads(
        SITE.read_text() + '\n[texts]\ndisplay_call = "{ticket} 请到 {window} 号"\n'
        '\n[keys.kiosk]\nappointment = "KEY_Y"\n'
        '\n[ticket]\nlines = ["{center}{big}{number}", "{qr}"]\n',
        "site.toml",
    )
    assert config.texts.display_call == "{ticket} 请到 {window} 号"
    assert config.keys.kiosk.appointment == "KEY_Y"
    assert config.ticket.lines == ("{center}{big}{number}", "{qr}")
    text = SITE.read_text() + '\n[ticket]\nlines = ["{center}{numbr}"]\n'
    err = error_for(text)
    assert err.key == "ticket.lines" and "{numbr}" in err.message
    err = error_for(SITE.read_text() + '\n[keys.caller]\ncall = "KEY_NOPE"\n')
    assert err.key == "keys.caller.call"


def test_every_problem_is_reported_at_once_sorted_by_line() -> None:
    text = (
        SITE.read_text()
        .replace("interleave = 2", "interleav = 2")
        .replace("daily_cap = 3", 'daily_cap = "three"')
        .replace("window = 2", "window = 9")
    )
    err = error_for(text)
    found = [(p.line, p.key) for p in err.problems]
    assert found == [
        (line_of(text, "interleav = 2"), "queue.interleav"),
        (line_of(text, 'daily_cap = "three"'), "services[1].daily_cap"),
        (line_of(text, "window = 9"), "counters[2].window"),
    ]
    assert str(err).splitlines() == [
        f"site.toml:{p.line}: {p.key}: {p.message}" for p in err.problems
    ]
    assert (err.line, err.key) == found[0]  # the first problem, for callers that read one


def test_a_syntax_error_is_reported_alone() -> None:
    text = SITE.read_text().replace("interleave = 2", "interleav = 2\nbroken = ")
    err = error_for(text)
    assert len(err.problems) == 1 and "TOML syntax" in err.message
    assert err.line == line_of(text, "broken =")


def test_a_multiline_string_does_not_move_the_lines() -> None:
    text = (
        SITE.read_text()
        .replace(
            'name = "测试政务服务中心"',
            'name = """测试政务服务中心\n[queue]\nmax_recalls = 1\n[[counters]]\nwindow = 1\n"""',
        )
        .replace("max_recalls = 2", "max_recalls = -2")
    )
    err = error_for(text)
    assert err.key == "queue.max_recalls" and err.line == line_of(text, "max_recalls = -2")


def test_values_the_program_sets_are_no_keys_of_the_file() -> None:
    err = error_for(SITE.read_text().replace("[site]", "[site]\nallow_example_secret = true"))
    assert err.key == "site.allow_example_secret" and "unknown key" in err.message
    assert "allow_example_secret" not in err.message.split("allowed:")[1]


def test_device_timeouts_and_their_bounds() -> None:
    config = load(SITE)
    assert (config.devices.hall_timeout_s, config.devices.hall_attempts) == (2.0, 3)
    config = loads(SITE.read_text() + "\n[devices]\nhall_timeout_ms = 750\nhall_attempts = 5\n")
    assert (config.devices.hall_timeout_s, config.devices.hall_attempts) == (0.75, 5)
    text = SITE.read_text() + "\n[devices]\nhall_timeout_ms = 20\nhall_attempts = 11\n"
    err = error_for(text)
    assert [(p.key, p.line) for p in err.problems] == [
        ("devices.hall_timeout_ms", line_of(text, "hall_timeout_ms")),
        ("devices.hall_attempts", line_of(text, "hall_attempts")),
    ]
    assert "50 to 60000" in err.problems[0].message and "1 to 10" in err.problems[1].message


def _site_copy(tmp_path: Path, text: str) -> Path:
    site = tmp_path / "site.toml"
    site.write_text(text)
    (tmp_path / "test.secret").write_bytes((SITE.parent / "test.secret").read_bytes())
    return site


def _quhao(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_quhao_check_fails_without_the_secret_the_kiosks_need(tmp_path: Path) -> None:
    text = SITE.read_text().replace('secret_file = "test.secret"\n', "")
    site = _site_copy(tmp_path, text)
    result = _quhao("check", "--config", str(site))
    assert result.returncode == 2, result.stdout
    assert f"{site}:{line_of(text, '[site]')}: site.secret_file: not set" in result.stderr
    # the kiosk refuses the same file at start, with the same words
    kiosk = _quhao("kiosk", "--config", str(site), "--device", "kiosk-K1")
    assert kiosk.returncode == 2 and "site.secret_file: not set" in kiosk.stderr


def test_quhao_check_fails_when_the_secret_file_is_missing(tmp_path: Path) -> None:
    text = SITE.read_text().replace('"test.secret"', '"missing.secret"')
    site = _site_copy(tmp_path, text)
    result = _quhao("check", "--config", str(site))
    assert result.returncode == 2
    assert f"{site}:{line_of(text, 'missing.secret')}: site.secret_file: cannot read" in (
        result.stderr
    )
    ok = _quhao("check", "--config", str(_site_copy(tmp_path, SITE.read_text())))
    assert ok.returncode == 0 and ": ok — site testhall" in ok.stdout


def test_a_daemon_refusing_its_file_says_every_problem_on_its_own_line(tmp_path: Path) -> None:
    text = SITE.read_text().replace("elderly_age = 65", "elderly_age = 0")
    text = text.replace('prefix = "K"', 'prefix = "KK"')
    site = _site_copy(tmp_path, text)
    result = _quhao("hall", "--config", str(site), "--state-dir", str(tmp_path / "hall"))
    age, prefix = line_of(text, "elderly_age"), line_of(text, 'prefix = "KK"')
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"quhao: configuration error: {site}:{age}: queue.elderly_age: must be positive, got 0",
        f"quhao: configuration error: {site}:{prefix}: "
        "services[2].prefix: must be one capital letter A-Z, got 'KK'",
    ]


def test_quhao_check_reports_three_independent_errors_with_their_lines(tmp_path: Path) -> None:
    text = (
        SITE.read_text()
        .replace("elderly_age = 65", "elderly_age = 0")
        .replace('prefix = "K"', 'prefix = "KK"')
        .replace('name = "kiosk-K2"', 'name = "kiosk-K1"')
    )
    site = _site_copy(tmp_path, text)
    result = _quhao("check", "--config", str(site))
    assert result.returncode == 2
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{site}:")]
    age, prefix = line_of(text, "elderly_age"), line_of(text, '"KK"')
    second_kiosk = max(i for i, line in enumerate(text.splitlines(), 1) if "kiosk-K1" in line)
    assert reported == [
        f"{site}:{age}: queue.elderly_age: must be positive, got 0",
        f"{site}:{prefix}: services[2].prefix: must be one capital letter A-Z, got 'KK'",
        f"{site}:{second_kiosk}: kiosks[1].name: device name 'kiosk-K1' is already used",
    ]


def test_check_finds_device_uris_the_daemons_would_refuse() -> None:
    text = (
        SITE.read_text()
        .replace('name = "kiosk-K1"', 'name = "kiosk-K1"\nprinter = "lpt://1"\nreaders = ["x"]')
        .replace(
            'name = "counter-W2"',
            'name = "counter-W2"\ndisplay = "serial:///dev/ttyUSB1?addr=three"',
        )
    )
    config = loads(text, SITE)
    found = {(p.key, p.line) for p in check(config)}
    assert found == {
        ("kiosks[0].readers[0]", line_of(text, 'readers = ["x"]')),
        ("kiosks[0].printer", line_of(text, "lpt://")),
        ("counters[2].display", line_of(text, "addr=three")),
    }
    assert check(config, ["kiosk-K2", "counter-W1"]) == []  # only the daemons named


def test_check_refuses_an_led_protocol_no_counter_speaks() -> None:
    text = SITE.read_text().replace(
        'name = "counter-W2"',
        'name = "counter-W2"\ndisplay = "serial:///dev/ttyUSB1?addr=3&protocol=acme-led"',
    )
    problems = check(loads(text, SITE))
    assert [(p.key, p.line) for p in problems] == [
        ("counters[2].display", line_of(text, "protocol=acme-led"))
    ]
    assert "unknown LED protocol 'acme-led' (known: quhao-led)" in problems[0].message
