"""The Green Button sample year: hourly Wh of six household load profiles (data/demo, Apache-2.0).

``data/demo/greenbutton-2011-hourly-wh.csv`` has one row per hour of 2011 (UTC hour start) and
one integer Wh column per profile; see ``data/demo/ATTRIBUTION.md`` for where it comes from.

The demo replays that year :data:`REPLAY_WEEKS` weeks later, in 2025: the programs are dated
(the current SEP terms open on 2025-01-01), and a whole number of weeks keeps every day on its
weekday. A replayed hour takes the load of the same local wall-clock hour 730 weeks earlier.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import cached_property
from pathlib import Path

from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE

SAMPLE_YEAR_CSV = REPO_ROOT / "data" / "demo" / "greenbutton-2011-hourly-wh.csv"
TIMESTAMP_COLUMN = "interval_start_utc"
REPLAY_WEEKS = 730  # 2011-07-20 (a Wednesday) is replayed on 2025-07-16 (a Wednesday)
REPLAY_SHIFT = timedelta(weeks=REPLAY_WEEKS)


class OutsideSampleYear(KeyError):
    """The sample year has no reading for that hour."""


@dataclass(frozen=True)
class SampleYear:
    """Hourly Wh per load profile, by the UTC start of the hour."""

    profiles: tuple[str, ...]
    wh_by_hour: dict[datetime, dict[str, int]]

    @classmethod
    def load(cls, path: Path = SAMPLE_YEAR_CSV) -> "SampleYear":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            profiles = tuple(name for name in reader.fieldnames if name != TIMESTAMP_COLUMN)
            wh_by_hour = {
                datetime.strptime(row[TIMESTAMP_COLUMN], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc): {
                    profile: int(row[profile]) for profile in profiles
                }
                for row in reader
            }
        return cls(profiles, wh_by_hour)

    @cached_property  # asked for every replayed hour (wh_or_nearest): not a scan of the year each time
    def first_hour(self) -> datetime:
        return min(self.wh_by_hour)

    @cached_property
    def last_hour(self) -> datetime:
        return max(self.wh_by_hour)

    def wh(self, profile: str, hour_start: datetime) -> Decimal:
        """The profile's energy in the hour starting at ``hour_start`` (UTC), in Wh."""
        try:
            return Decimal(self.wh_by_hour[hour_start.astimezone(timezone.utc)][profile])
        except KeyError:
            raise OutsideSampleYear(
                f"the sample year has no {profile} reading for the hour starting {hour_start.isoformat()}"
            ) from None

    def wh_or_nearest(self, profile: str, hour_start: datetime) -> Decimal:
        """Like :meth:`wh`, but the first or last hour of the year stands in beyond its ends."""
        clamped = min(max(hour_start.astimezone(timezone.utc), self.first_hour), self.last_hour)
        return self.wh(profile, clamped)


def sample_hour(replayed: datetime) -> datetime:
    """The sample-year hour (UTC) that a replayed hour stands for: the same local wall-clock time
    :data:`REPLAY_WEEKS` weeks earlier. DST starts and ends on matching Sundays in 2011 and 2025,
    so a repeated hour maps to the repeated hour (``fold``)."""
    local = replayed.astimezone(LOCAL_ZONE)
    wall = local.replace(tzinfo=None) - REPLAY_SHIFT
    return wall.replace(tzinfo=LOCAL_ZONE, fold=local.fold).astimezone(timezone.utc)


def sample_day(replayed: date) -> date:
    """The day of the sample year whose load a replayed day carries."""
    return replayed - REPLAY_SHIFT


def replayed_days(sample: SampleYear) -> tuple[date, date]:
    """The first and last local day whose every hour the replayed sample year covers."""
    first = sample.first_hour.astimezone(LOCAL_ZONE).date()
    end = (sample.last_hour + timedelta(hours=1)).astimezone(LOCAL_ZONE).date()  # the first day not covered
    return first + REPLAY_SHIFT, end - timedelta(days=1) + REPLAY_SHIFT


def profile_title(profile: str) -> str:
    """``inland_single_family`` → ``inland single-family``."""
    place, *kind = profile.split("_")
    return f"{place} {'-'.join(kind)}"
