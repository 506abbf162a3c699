"""`quhao report --week 2026-W47 | --month 2026-11 | --from DAY --to DAY` (and, beside
the day's report, `--day`): the period report with the performance score
(hall/periods.py; docs/supervision.md, "Period reports and scores")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hall.periods import parse_period, period_report
from hall.periods_html import write
from quhao.config import load


def wants_period(args: argparse.Namespace) -> bool:
    return bool(args.week or args.month or args.start or args.end)


def cmd_period_report(args: argparse.Namespace) -> int:
    try:
        period = parse_period(args.day, args.week, args.month, args.start, args.end)
    except ValueError as exc:
        print(f"quhao report: {exc}", file=sys.stderr)
        return 2
    if args.config is None:
        print(
            "quhao report: a period report needs --config site.toml (departments, "
            "maximum waits, [scoring] weights)",
            file=sys.stderr,
        )
        return 2
    db: Path = args.db or args.state_dir / "hall.sqlite"
    if not db.exists():
        print(f"quhao: no database at {db}", file=sys.stderr)
        return 2
    config = load(args.config)
    for path in write(period_report(db, period, config), args.out):
        print(path)
    return 0
