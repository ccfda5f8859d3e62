"""Cron jobs: `cron()` builds a `CronJob`, `next_cron()` finds its next run. Pure datetime logic, no Redis.

The schedule is matched against wall-clock time in the tzinfo of the datetime it starts from. For naive datetimes and
fixed offsets the result is exactly arq 0.26.3's. For IANA zones (``zoneinfo.ZoneInfo``) daylight saving time is
followed, which arq could not do because its worker used a fixed offset (other tzinfo classes, such as pytz's, get
arq's plain wall-clock arithmetic):

* a wall time that does not exist (the clocks spring forward over it) is skipped: the job next runs at the next
  matching wall time that does exist. A daily 01:30 job in Europe/London does not run on the day BST starts.
* a wall time that occurs twice (the clocks fall back over it) runs once, at its first occurrence (``fold=0``).

Both follow one rule: a job runs once for each matching wall time that actually occurs. Running a skipped slot late
instead (as Vixie cron does) would fold several slots of a frequent job into one instant, and give a run whose time
does not match the schedule; every worker must also agree on the same instant, because the job id contains it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from arq.typing import WEEKDAYS, OptionType, SecondsTimedelta, WeekdayOptionType, WorkerCoroutine
from arq.utils import import_string, to_seconds

if TYPE_CHECKING:  # loaded where used: a worker without cron jobs never needs the zone database
    from zoneinfo import ZoneInfo

__all__ = ['cron', 'CronJob', 'next_cron', 'local_timezone']

_ONE_SECOND = timedelta(seconds=1)
_ONE_DAY = timedelta(days=1)
# any valid month/day/weekday combination recurs within ~40 years, so a longer search means the only matches
# fall in DST gaps (e.g. 01:xx on a Sunday 26 March in Europe/London); fail instead of looping forever
_HORIZON_YEARS = 400
# the longest each month can be (February in a leap year), for rejecting days that can never occur
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_LOCALTIME = Path('/etc/localtime')
_TIMEZONE_FILE = Path('/etc/timezone')


@dataclasses.dataclass(frozen=True, slots=True)
class _Schedule:
    """Validated schedule fields: `None` means any value, otherwise the sorted allowed values."""

    month: tuple[int, ...] | None
    day: tuple[int, ...] | None
    weekday: tuple[int, ...] | None
    hour: tuple[int, ...]
    minute: tuple[int, ...]
    second: tuple[int, ...]
    microsecond: int

    def next_wall_time(self, start: datetime) -> datetime:
        """The first naive datetime at or after `start` (a whole second) matching every field."""
        moment = start
        while True:
            if self.month is not None and moment.month not in self.month:
                moment = _next_month_start(moment, self.month)
            elif not self._matches_date(moment.date()):
                moment = datetime.combine(moment.date() + _ONE_DAY, time())
            else:
                clock = self._clock_at_or_after(moment.time())
                if clock is not None:
                    return datetime.combine(moment.date(), clock)
                moment = datetime.combine(moment.date() + _ONE_DAY, time())

    def _matches_date(self, day: date) -> bool:
        return (self.day is None or day.day in self.day) and (self.weekday is None or day.weekday() in self.weekday)

    def _clock_at_or_after(self, start: time) -> time | None:
        """The earliest matching time of day at or after `start`, or None when the rest of the day has none."""
        for hour in self.hour:
            if hour < start.hour:
                continue
            same_hour = hour == start.hour
            for minute in self.minute:
                if same_hour and minute < start.minute:
                    continue
                floor = start.second if same_hour and minute == start.minute else 0
                second = next((s for s in self.second if s >= floor), None)
                if second is not None:
                    return time(hour, minute, second, self.microsecond)
        return None


def next_cron(
    previous_dt: datetime,
    *,
    month: OptionType = None,
    day: OptionType = None,
    weekday: WeekdayOptionType = None,
    hour: OptionType = None,
    minute: OptionType = None,
    second: OptionType = 0,
    microsecond: int = 123_456,
) -> datetime:
    """
    Find the first datetime after `previous_dt` that matches every field, in `previous_dt`'s wall-clock time.

    The search starts at `previous_dt` + 1 s, truncated to the whole second; the result's microsecond is always
    `microsecond`. Each field is None (any value), an int, or a set of ints. See the module docstring for DST.

    :param previous_dt: the previous run (or now); its tzinfo is kept in the result
    :param month: 1-12
    :param day: day of the month, 1-31
    :param weekday: 0-6 with Monday as 0, or one of 'mon', 'tues', 'wed', 'thurs', 'fri', 'sat', 'sun'
    :param hour: 0-23
    :param minute: 0-59
    :param second: 0-59
    :param microsecond: 0-999999
    """
    schedule = _build_schedule(month, day, weekday, hour, minute, second, microsecond)
    return _next_from_schedule(previous_dt, schedule)


def _next_from_schedule(previous: datetime, schedule: _Schedule) -> datetime:
    from zoneinfo import ZoneInfo

    zone = previous.tzinfo
    if isinstance(zone, ZoneInfo):
        return _next_in_zone(previous, zone, schedule)
    # naive, fixed offsets and other tzinfo classes: plain wall-clock arithmetic, exactly as arq. pytz in particular
    # cannot take part in the DST checks: its tzinfo objects each carry one fixed offset
    return schedule.next_wall_time(_start_after(previous.replace(tzinfo=None))).replace(tzinfo=zone)


def _start_after(previous: datetime) -> datetime:
    # arq steps from previous + 1 s and only ever matches whole seconds, so the microsecond is dropped here
    return (previous + _ONE_SECOND).replace(microsecond=0, fold=0)


def _next_in_zone(previous: datetime, zone: ZoneInfo, schedule: _Schedule) -> datetime:
    """Search wall-clock time, skipping candidates that do not exist or are not after `previous` in real time."""
    # a round trip through UTC turns a wall time inside a DST gap into one that exists, and sets fold correctly
    previous = previous.astimezone(UTC).astimezone(zone)
    previous_utc = previous.astimezone(UTC)
    start = _start_after(previous.replace(tzinfo=None))
    wall = start
    while True:
        wall = schedule.next_wall_time(wall)
        candidate = wall.replace(tzinfo=zone, fold=0)
        # an ambiguous wall time whose first occurrence is already past (previous has fold=1) is not run again
        if _exists(candidate) and candidate.astimezone(UTC) > previous_utc:
            return candidate
        if wall.year - start.year > _HORIZON_YEARS:
            raise ValueError(f'no time after {previous.isoformat()} matching the cron schedule exists in {zone}')
        wall = wall.replace(microsecond=0) + _ONE_SECOND


def _exists(moment: datetime) -> bool:
    """Whether an aware wall time occurs, i.e. is not skipped by the clocks springing forward."""
    round_trip = moment.astimezone(UTC).astimezone(moment.tzinfo)
    return round_trip.replace(tzinfo=None) == moment.replace(tzinfo=None)


def _next_month_start(moment: datetime, months: tuple[int, ...]) -> datetime:
    later = [m for m in months if m > moment.month]
    if later:
        return datetime(moment.year, later[0], 1)
    return datetime(moment.year + 1, months[0], 1)


def _build_schedule(
    month: OptionType,
    day: OptionType,
    weekday: WeekdayOptionType,
    hour: OptionType,
    minute: OptionType,
    second: OptionType,
    microsecond: int,
) -> _Schedule:
    months = _values('month', month, 1, 12)
    days = _values('day', day, 1, 31)
    if months is not None and days is not None and all(days[0] > _MONTH_MAX_DAYS[m - 1] for m in months):
        raise ValueError(f'day={day!r} never occurs in month={month!r}')
    if isinstance(microsecond, bool) or not isinstance(microsecond, int) or not 0 <= microsecond <= 999_999:
        raise ValueError(f'microsecond must be an int from 0 to 999999, not {microsecond!r}')
    return _Schedule(
        month=months,
        day=days,
        weekday=_values('weekday', _weekday_numbers(weekday), 0, 6),
        hour=_values('hour', hour, 0, 23) or tuple(range(24)),
        minute=_values('minute', minute, 0, 59) or tuple(range(60)),
        second=_values('second', second, 0, 59) or tuple(range(60)),
        microsecond=microsecond,
    )


def _weekday_numbers(weekday: WeekdayOptionType) -> OptionType:
    if isinstance(weekday, str):
        return _weekday_number(weekday)
    if isinstance(weekday, Iterable):
        # a collection of names is accepted too, though arq only took a single name
        return {_weekday_number(w) if isinstance(w, str) else w for w in weekday}
    return weekday


def _weekday_number(name: str) -> int:
    try:
        return WEEKDAYS.index(name.lower())
    except ValueError:
        raise ValueError(f'weekday must be 0-6 or one of {", ".join(WEEKDAYS)}, not {name!r}') from None


def _values(field: str, option: OptionType, low: int, high: int) -> tuple[int, ...] | None:
    """Check one field and return its sorted allowed values, or None for any value."""
    if option is None:
        return None
    # arq only tested membership, so any collection of ints works as a set
    values = tuple(option) if isinstance(option, Iterable) else (option,)
    if not values:
        raise ValueError(f'{field} must not be empty: it would never match')
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f'{field} values must be ints from {low} to {high}, not {value!r}')
    return tuple(sorted(set(values)))


@dataclasses.dataclass
class CronJob:
    """A coroutine to enqueue on a schedule; build it with `cron()`. The worker keeps `next_run` up to date."""

    name: str
    coroutine: WorkerCoroutine
    month: OptionType
    day: OptionType
    weekday: WeekdayOptionType
    hour: OptionType
    minute: OptionType
    second: OptionType
    microsecond: int
    run_at_startup: bool
    unique: bool
    job_id: str | None
    timeout_s: float | None
    keep_result_s: float | None
    keep_result_forever: bool | None
    max_tries: int | None
    next_run: datetime | None = None

    def __post_init__(self) -> None:
        # fail when the job is defined rather than when the worker first schedules it
        self._build_schedule()

    def calculate_next(self, prev_run: datetime) -> None:
        """Set `next_run` to the first time after `prev_run` matching the schedule (see `next_cron`)."""
        self.next_run = _next_from_schedule(prev_run, self._build_schedule())

    def _build_schedule(self) -> _Schedule:
        return _build_schedule(
            self.month, self.day, self.weekday, self.hour, self.minute, self.second, self.microsecond
        )

    def __repr__(self) -> str:
        fields = ' '.join(f'{f.name}={getattr(self, f.name)}' for f in dataclasses.fields(self))
        return f'<CronJob {fields}>'


def cron(
    coroutine: str | WorkerCoroutine,
    *,
    name: str | None = None,
    month: OptionType = None,
    day: OptionType = None,
    weekday: WeekdayOptionType = None,
    hour: OptionType = None,
    minute: OptionType = None,
    second: OptionType = 0,
    microsecond: int = 123_456,
    run_at_startup: bool = False,
    unique: bool = True,
    job_id: str | None = None,
    timeout: SecondsTimedelta | None = None,
    keep_result: SecondsTimedelta | None = 0,
    keep_result_forever: bool = False,
    max_tries: int = 1,
) -> CronJob:
    """
    Create a cron job, e.g. ``cron(send_report, hour=9, minute=0)``. Pass the result in the worker's `cron_jobs`.

    The schedule fields (month to microsecond) are each None (any value), an int, or a set of ints; see `next_cron`.

    :param coroutine: the coroutine function, or its import string such as ``'app.tasks.send_report'``
    :param name: the job's function name; defaults to ``'cron:'`` + the import string or the coroutine's qualname
    :param run_at_startup: also run the job as soon as the worker starts
    :param unique: when several workers run the same cron, enqueue each run only once (the job id contains the time)
    :param job_id: a fixed job id instead of one derived from the name and the run time
    :param timeout: job timeout, in seconds or as a timedelta; None means the worker's `job_timeout`
    :param keep_result: how long to keep the result, in seconds or as a timedelta
    :param keep_result_forever: keep the result forever
    :param max_tries: how many times the job may be tried
    """
    if isinstance(coroutine, str):
        name = name or 'cron:' + coroutine
        function: WorkerCoroutine = import_string(coroutine)
    else:
        function = coroutine
    if not inspect.iscoroutinefunction(function):
        raise RuntimeError(f'{function!r} is not a coroutine function')
    return CronJob(
        name=name or 'cron:' + function.__qualname__,
        coroutine=function,
        month=month,
        day=day,
        weekday=weekday,
        hour=hour,
        minute=minute,
        second=second,
        microsecond=microsecond,
        run_at_startup=run_at_startup,
        unique=unique,
        job_id=job_id,
        timeout_s=to_seconds(timeout, 'timeout'),
        keep_result_s=to_seconds(keep_result, 'keep_result'),
        keep_result_forever=keep_result_forever,
        max_tries=max_tries,
    )


def local_timezone() -> tzinfo:
    """
    The system's time zone: its IANA zone when that can be found, so that cron jobs follow DST, else the current
    fixed UTC offset (arq's behaviour, which drifts by an hour when DST starts or ends until the worker restarts).
    """
    now = datetime.now(UTC)
    system = now.astimezone()
    name = _local_zone_name()
    if name is not None:
        zone = _zone_or_none(name)
        # /etc/timezone can disagree with /etc/localtime (it is not what libc reads), so the zone must agree with the
        # offset libc uses now; otherwise jobs would run at times other than the system's local time
        if zone is not None and now.astimezone(zone).utcoffset() == system.utcoffset():
            return zone
    assert system.tzinfo is not None  # astimezone() with no argument always returns an aware datetime
    return system.tzinfo


def _local_zone_name() -> str | None:
    """The IANA name of the system's zone, from the places libc and distributions keep it."""
    tz = os.environ.get('TZ')
    if tz is not None:
        # libc ignores /etc/localtime when TZ is set, even to a value that is not a zone name
        return _zone_key(tz.removeprefix(':'))
    if _LOCALTIME.is_symlink():
        return _zone_key(os.readlink(_LOCALTIME))
    try:
        return _TIMEZONE_FILE.read_text().strip() or None
    except OSError:
        return None


def _zone_key(name: str) -> str | None:
    # '/usr/share/zoneinfo/Europe/London' (or macOS's '/var/db/timezone/zoneinfo/...') -> 'Europe/London'
    _, found, key = name.rpartition('zoneinfo/')
    if found:
        return key or None
    return name or None


def _zone_or_none(name: str) -> ZoneInfo | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
