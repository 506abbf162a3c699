"""A broken site file is reported with the file, the line and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from quhao.config import ConfigError, load, loads

SITE = Path(__file__).parent / "sites" / "small.toml"
EXAMPLE = Path(__file__).parent.parent / "examples" / "site.toml"


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
    simulated = dataclasses.replace(
        config, site=dataclasses.replace(config.site, allow_example_secret=True)
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
