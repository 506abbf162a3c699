"""The simulated day's derived rules (simulators/scenario.py): staffing from the load and
ratings that worsen with waiting. Pure: properties over random inputs."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from simulators.scenario import rating_after, staffing, surge_day, windows_needed

DAY = surge_day(date(2026, 11, 23))
levels = st.sampled_from([1, 2, 3, 4, 5])
waits = st.floats(min_value=0, max_value=600, allow_nan=False)


@given(levels, waits, waits)
def test_a_longer_wait_never_gives_a_better_rating(base: int, a: float, b: float) -> None:
    short, long = sorted((a, b))
    later, sooner = rating_after(base, long, DAY), rating_after(base, short, DAY)
    assert later is not None and sooner is not None
    assert 1 <= later <= sooner <= base


@given(levels, st.floats(min_value=0, max_value=DAY.patience_min))
def test_a_wait_within_patience_costs_nothing(base: int, wait: float) -> None:
    assert rating_after(base, wait, DAY) == base


def test_no_rating_stays_no_rating() -> None:
    assert rating_after(None, 300, DAY) is None


@given(st.integers(min_value=1, max_value=5000), st.integers(min_value=1, max_value=5000))
def test_more_load_never_means_fewer_windows(a: int, b: int) -> None:
    small, big = sorted((a, b))
    need = [
        windows_needed(replace(DAY, loads={**DAY.loads, "tax": n}), "tax") for n in (small, big)
    ]
    assert 1 <= need[0] <= need[1]


def test_the_surge_day_staffs_normal_services_from_their_load() -> None:
    windows = staffing(DAY)
    assert windows["social"] == 8  # the surge service follows its plan
    assert DAY.windows == windows
    # a service twice as busy as another at the same service time gets at least as many
    assert windows["tax"] >= windows["housing_fund"]  # 55 vs 45 citizens, 10 minutes each
    assert all(n >= 1 for n in windows.values())
    assert sum(windows.values()) - windows["social"] <= 30  # a plausible hall
