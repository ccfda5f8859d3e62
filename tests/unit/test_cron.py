"""next_cron(), cron()/CronJob and local_timezone(): pure datetime logic, expected values worked out by hand.

DST dates used: Europe/London 2024 springs forward on 31 March (01:00 GMT -> 02:00 BST) and falls back on
27 October (02:00 BST -> 01:00 GMT); America/New_York 2024 on 10 March (02:00 -> 03:00) and 3 November (02:00 -> 01:00).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from arq.cron import CronJob, cron, local_timezone, next_cron

# not `import arq.cron as ...`: arq/__init__.py re-exports the cron() function under the same name
cron_module = importlib.import_module('arq.cron')


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:  # pragma: no cover
        pytest.skip(f'time zone data for {name} is not installed')


async def report(ctx: dict[Any, Any]) -> None:
    pass


def test_default_schedule_runs_at_the_start_of_the_next_minute() -> None:
    assert next_cron(datetime(2024, 1, 1, 12, 0, 0)) == datetime(2024, 1, 1, 12, 1, 0, 123456)


def test_previous_run_is_not_returned_again() -> None:
    assert next_cron(datetime(2024, 1, 1, 12, 1, 0, 123456)) == datetime(2024, 1, 1, 12, 2, 0, 123456)


def test_match_less_than_a_second_after_previous_is_found() -> None:
    # the search starts at previous + 1 s truncated to the second, as arq's does
    assert next_cron(datetime(2024, 1, 1, 11, 59, 59, 500000)) == datetime(2024, 1, 1, 12, 0, 0, 123456)


def test_every_second() -> None:
    assert next_cron(datetime(2024, 1, 1, 12, 0, 0), second=None) == datetime(2024, 1, 1, 12, 0, 1, 123456)


def test_every_second_rolls_over_into_the_next_year() -> None:
    assert next_cron(datetime(2024, 12, 31, 23, 59, 59), second=None) == datetime(2025, 1, 1, 0, 0, 0, 123456)


def test_hour_and_minute_already_past_today_run_tomorrow() -> None:
    assert next_cron(datetime(2024, 1, 1, 10, 0), hour=9, minute=30) == datetime(2024, 1, 2, 9, 30, 0, 123456)


def test_set_of_minutes() -> None:
    assert next_cron(datetime(2024, 1, 1, 10, 16), minute={0, 15, 30, 45}) == datetime(2024, 1, 1, 10, 30, 0, 123456)


def test_set_of_hours_wraps_to_the_next_day() -> None:
    expected = datetime(2024, 1, 2, 6, 0, 0, 123456)
    assert next_cron(datetime(2024, 1, 1, 18, 5), hour={6, 18}, minute=0) == expected


def test_any_collection_of_ints_works_as_a_set() -> None:
    # arq only tested membership, so lists and ranges worked although the annotation says set
    previous = datetime(2024, 1, 1, 10, 16)
    assert next_cron(previous, minute=[45, 30]) == datetime(2024, 1, 1, 10, 30, 0, 123456)  # type: ignore[arg-type]
    assert next_cron(previous, minute=range(20, 25)) == datetime(2024, 1, 1, 10, 20, 0, 123456)  # type: ignore[arg-type]


def test_day_31_skips_shorter_months() -> None:
    assert next_cron(datetime(2024, 4, 1), day=31, minute=0, hour=0) == datetime(2024, 5, 31, 0, 0, 0, 123456)


def test_february_29_waits_for_the_next_leap_year() -> None:
    assert next_cron(datetime(2024, 3, 1), month=2, day=29, hour=0, minute=0) == datetime(2028, 2, 29, 0, 0, 0, 123456)


def test_month_set_wraps_to_the_next_year() -> None:
    expected = datetime(2025, 3, 1, 0, 0, 0, 123456)
    assert next_cron(datetime(2024, 7, 2), month={3, 6}, day=1, hour=0, minute=0) == expected


@pytest.mark.parametrize('weekday', ['fri', 'FRI', 4, {4}])
def test_weekday_by_name_or_number(weekday: Any) -> None:
    # 1 January 2024 is a Monday
    expected = datetime(2024, 1, 5, 9, 0, 0, 123456)
    assert next_cron(datetime(2024, 1, 1, 12), weekday=weekday, hour=9, minute=0) == expected


def test_sunday_is_weekday_6() -> None:
    assert next_cron(datetime(2024, 1, 1), weekday='sun', hour=0, minute=0) == datetime(2024, 1, 7, 0, 0, 0, 123456)


def test_day_and_weekday_must_both_match() -> None:
    expected = datetime(2024, 9, 13, 0, 0, 0, 123456)
    assert next_cron(datetime(2024, 1, 1), day=13, weekday='fri', hour=0, minute=0) == expected


def test_microsecond_sets_the_result_microsecond() -> None:
    assert next_cron(datetime(2024, 1, 1, 12, 0, 0, 999999), microsecond=0) == datetime(2024, 1, 1, 12, 1)
    assert next_cron(datetime(2024, 1, 1, 12), microsecond=999999) == datetime(2024, 1, 1, 12, 1, 0, 999999)


def test_fixed_offset_matches_wall_clock_and_keeps_tzinfo() -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    result = next_cron(datetime(2024, 1, 1, 10, tzinfo=tz), hour=9, minute=0)
    assert result == datetime(2024, 1, 2, 9, 0, 0, 123456, tzinfo=tz)
    assert result.tzinfo is tz


@pytest.mark.parametrize(
    ('fields', 'message'),
    [
        ({'hour': 25}, 'hour'),
        ({'hour': -1}, 'hour'),
        ({'hour': True}, 'hour'),
        ({'minute': 60}, 'minute'),
        ({'second': {0, 60}}, 'second'),
        ({'minute': set()}, 'minute must not be empty'),
        ({'month': 13}, 'month'),
        ({'day': 0}, 'day'),
        ({'weekday': 7}, 'weekday'),
        ({'weekday': 'funday'}, 'weekday'),
        ({'month': 2, 'day': 30}, 'never occurs'),
        ({'month': {4, 6}, 'day': {31}}, 'never occurs'),
        ({'microsecond': 1_000_000}, 'microsecond'),
        ({'hour': 1.5}, 'hour'),
    ],
)
def test_invalid_fields_raise_value_error_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next_cron(datetime(2024, 1, 1), **fields)
    with pytest.raises(ValueError, match=message):
        cron(report, **fields)


def test_spring_forward_skips_a_wall_time_that_does_not_exist() -> None:
    london = zone('Europe/London')
    result = next_cron(datetime(2024, 3, 30, 1, 30, 0, 123456, tzinfo=london), hour=1, minute=30)
    assert result == datetime(2024, 4, 1, 1, 30, 0, 123456, tzinfo=london)
    assert result.tzinfo is london


def test_spring_forward_runs_the_first_match_after_the_gap() -> None:
    london = zone('Europe/London')
    result = next_cron(datetime(2024, 3, 31, 0, 30, 0, 123456, tzinfo=london), minute={0, 30})
    assert result == datetime(2024, 3, 31, 2, 0, 0, 123456, tzinfo=london)
    assert result.astimezone(UTC) == datetime(2024, 3, 31, 1, 0, 0, 123456, tzinfo=UTC)


def test_fall_back_runs_an_ambiguous_wall_time_once_at_its_first_occurrence() -> None:
    london = zone('Europe/London')
    first = next_cron(datetime(2024, 10, 27, 0, 30, 0, 123456, tzinfo=london), minute=30)
    assert (first.hour, first.minute, first.fold) == (1, 30, 0)
    assert first.astimezone(UTC) == datetime(2024, 10, 27, 0, 30, 0, 123456, tzinfo=UTC)
    second = next_cron(first, minute=30)
    assert (second.hour, second.minute) == (2, 30)
    assert second.astimezone(UTC) == datetime(2024, 10, 27, 2, 30, 0, 123456, tzinfo=UTC)


def test_daily_job_in_the_repeated_hour_runs_once() -> None:
    london = zone('Europe/London')
    runs = [datetime(2024, 10, 26, 1, 30, 0, 123456, tzinfo=london)]
    for _ in range(2):
        runs.append(next_cron(runs[-1], hour=1, minute=30))
    assert [r.astimezone(UTC) for r in runs[1:]] == [
        datetime(2024, 10, 27, 0, 30, 0, 123456, tzinfo=UTC),
        datetime(2024, 10, 28, 1, 30, 0, 123456, tzinfo=UTC),
    ]


def test_starting_in_the_second_occurrence_does_not_rerun_the_first() -> None:
    # 01:10 GMT (fold=1): 01:30 first occurred at 01:30 BST, 40 minutes ago, so it is not run again
    london = zone('Europe/London')
    previous = datetime(2024, 10, 27, 1, 10, tzinfo=london, fold=1)
    assert next_cron(previous, minute=30).astimezone(UTC) == datetime(2024, 10, 27, 2, 30, 0, 123456, tzinfo=UTC)
    daily = next_cron(previous, hour=1, minute=30)
    assert daily.astimezone(UTC) == datetime(2024, 10, 28, 1, 30, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ('fold', 'expected_utc'), [(0, datetime(2024, 3, 31, 1, 31)), (1, datetime(2024, 3, 31, 0, 31))]
)
def test_previous_inside_the_gap_is_read_with_its_fold(fold: int, expected_utc: datetime) -> None:
    # 01:30 does not exist: fold=0 reads it with the GMT offset (01:30Z), fold=1 with the BST offset (00:30Z)
    london = zone('Europe/London')
    result = next_cron(datetime(2024, 3, 31, 1, 30, tzinfo=london, fold=fold), minute=None, microsecond=0)
    assert result.astimezone(UTC) == expected_utc.replace(tzinfo=UTC)


@pytest.mark.parametrize(('day', 'wall_minutes'), [(10, 24 * 60 - 60), (3, 24 * 60)])
def test_every_minute_through_a_transition_day(day: int, wall_minutes: int) -> None:
    # one run per wall-clock minute that occurs: 60 fewer on the spring day, none extra on the 25-hour autumn day
    new_york = zone('America/New_York')
    month = 3 if day == 10 else 11
    runs = [datetime(2024, month, day - 1, 23, 59, 0, 123456, tzinfo=new_york)]
    end = datetime(2024, month, day + 1, tzinfo=new_york)
    while runs[-1] < end:
        runs.append(next_cron(runs[-1], minute=None))
    instants = [r.astimezone(UTC) for r in runs]
    assert instants == sorted(set(instants))
    assert all(r.astimezone(UTC).astimezone(new_york).replace(tzinfo=None) == r.replace(tzinfo=None) for r in runs)
    assert len(runs) - 2 == wall_minutes


def test_every_second_crosses_the_gap_in_one_call() -> None:
    new_york = zone('America/New_York')
    result = next_cron(datetime(2024, 3, 10, 1, 59, 59, tzinfo=new_york), second=None)
    assert result == datetime(2024, 3, 10, 3, 0, 0, 123456, tzinfo=new_york)


def test_schedule_that_only_matches_inside_dst_gaps_raises() -> None:
    # 26 March on a Sunday is always the last Sunday of March, the day the clocks skip 01:00-02:00 in the EU
    london = zone('Europe/London')
    with pytest.raises(ValueError, match='no time after'):
        next_cron(datetime(2024, 1, 1, tzinfo=london), month=3, day=26, weekday='sun', hour=1)


def test_cron_from_a_coroutine_function() -> None:
    job = cron(report, hour=3)
    assert job.name == 'cron:report'
    assert job.coroutine is report
    assert (job.hour, job.second, job.microsecond, job.max_tries) == (3, 0, 123456, 1)
    assert (job.run_at_startup, job.unique, job.job_id, job.timeout_s) == (False, True, None, None)
    assert (job.keep_result_s, job.keep_result_forever, job.next_run) == (0, False, None)


def test_cron_from_an_import_string() -> None:
    job = cron('asyncio.sleep', minute=0)
    assert job.name == 'cron:asyncio.sleep'
    assert job.coroutine is asyncio.sleep  # type: ignore[comparison-overlap]


def test_cron_explicit_name_and_options() -> None:
    job = cron(
        'asyncio.sleep',
        name='nightly',
        timeout=timedelta(minutes=2),
        keep_result=30,
        keep_result_forever=True,
        max_tries=3,
        job_id='fixed',
        unique=False,
        run_at_startup=True,
    )
    assert (job.name, job.timeout_s, job.keep_result_s, job.keep_result_forever) == ('nightly', 120.0, 30.0, True)
    assert (job.max_tries, job.job_id, job.unique, job.run_at_startup) == (3, 'fixed', False, True)


def test_cron_rejects_a_plain_function() -> None:
    def not_async(ctx: dict[Any, Any]) -> None:
        pass

    with pytest.raises(RuntimeError, match='is not a coroutine function'):
        cron(not_async)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match='is not a coroutine function'):
        cron('os.getcwd')


def test_cron_bad_import_string_raises_import_error() -> None:
    with pytest.raises(ImportError):
        cron('asyncio.no_such_coroutine')


def test_calculate_next_sets_next_run() -> None:
    job = cron(report, weekday='mon', hour=9, minute=0)
    job.calculate_next(datetime(2024, 1, 1, 12))
    assert job.next_run == datetime(2024, 1, 8, 9, 0, 0, 123456)
    job.calculate_next(job.next_run)
    assert job.next_run == datetime(2024, 1, 15, 9, 0, 0, 123456)


def test_cron_job_built_directly_is_validated() -> None:
    with pytest.raises(ValueError, match='hour'):
        CronJob('x', report, None, None, None, 24, None, 0, 0, False, True, None, None, None, None, None)


def test_repr_lists_the_fields() -> None:
    text = repr(cron(report, hour=3))
    assert text.startswith('<CronJob name=cron:report coroutine=<function report at ')
    assert ' hour=3 minute=None second=0 microsecond=123456 run_at_startup=False ' in text
    assert text.endswith(' max_tries=1 next_run=None>')


@pytest.fixture
def set_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    """Set or clear TZ and make libc re-read it; both are restored afterwards."""

    def set_tz(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv('TZ', raising=False)
        else:
            monkeypatch.setenv('TZ', value)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize('value', ['America/New_York', ':America/New_York', '/usr/share/zoneinfo/America/New_York'])
def test_local_timezone_from_tz_variable(set_tz: Callable[[str | None], None], value: str) -> None:
    zone('America/New_York')
    set_tz(value)
    assert local_timezone() == ZoneInfo('America/New_York')


def test_local_timezone_unknown_tz_falls_back_to_fixed_offset(set_tz: Callable[[str | None], None]) -> None:
    set_tz('Not/AZone')
    tz = local_timezone()
    assert isinstance(tz, timezone)
    assert tz == datetime.now().astimezone().tzinfo


def test_local_zone_name_from_localtime_symlink(
    set_tz: Callable[[str | None], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_tz(None)
    link = tmp_path / 'localtime'
    link.symlink_to('/usr/share/zoneinfo/Europe/London')
    monkeypatch.setattr(cron_module, '_LOCALTIME', link)
    assert cron_module._local_zone_name() == 'Europe/London'


def test_local_zone_name_from_timezone_file(
    set_tz: Callable[[str | None], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_tz(None)
    (tmp_path / 'timezone').write_text('Asia/Tokyo\n')
    monkeypatch.setattr(cron_module, '_LOCALTIME', tmp_path / 'missing')
    monkeypatch.setattr(cron_module, '_TIMEZONE_FILE', tmp_path / 'timezone')
    assert cron_module._local_zone_name() == 'Asia/Tokyo'


def test_local_zone_name_none_when_nothing_names_it(
    set_tz: Callable[[str | None], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_tz(None)
    monkeypatch.setattr(cron_module, '_LOCALTIME', tmp_path / 'missing')
    monkeypatch.setattr(cron_module, '_TIMEZONE_FILE', tmp_path / 'missing')
    assert cron_module._local_zone_name() is None
    assert local_timezone() == datetime.now().astimezone().tzinfo


def test_local_timezone_ignores_a_zone_that_disagrees_with_libc(
    set_tz: Callable[[str | None], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # libc reads /etc/localtime, not /etc/timezone; a stale /etc/timezone must not move cron jobs to another zone
    zone('Etc/GMT-14')
    set_tz('UTC')
    monkeypatch.setattr(cron_module, '_local_zone_name', lambda: 'Etc/GMT-14')
    assert local_timezone() == UTC
