"""A realistic, valid load of utility meter reads (``utility.meter-reads.v1`` records).

2,000 service accounts, each with one interval meter, read hourly. The utility's head-end
delivers the reads the morning after each local day, one file per meter: so the topic holds
day after day, within a day the accounts in a shuffled order, and each account's 24 hours
together (keyed by service account, as the contract says).

- 95 % residential accounts on AMI meters, in Wh: a base load plus an evening air-conditioning
  peak that varies with each day's heat;
- 5 % small commercial accounts on MV-90 interval recorders, in kWh: a business-hours load;
- about 1.5 % of the reads are ESTIMATED; every read is revision 0, aligned to the hour,
  and read after its interval ended.

Every record passes the telemetry service's validation, so all of them must come out clean.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Iterator

from gridflex.calendar import local_day_bounds

ACCOUNTS = 2_000
FIRST_DAY = date(2025, 6, 2)  # summer: no daylight-saving change for weeks, 24 hourly reads a day
HOUR = timedelta(hours=1)
COMMERCIAL_SHARE = 0.05
ESTIMATED_SHARE = 0.015
SEED = 20250602


@dataclass(frozen=True)
class Account:
    service_account_id: str
    meter_id: str
    commercial: bool
    base: float  # Wh (residential) or kWh (commercial) per hour
    peak: float  # extra at the daily peak, same unit

    def value(self, local_hour: int, heat: float, noise: float) -> Decimal:
        if self.commercial:
            shape = 1.0 if 8 <= local_hour < 18 else 0.15
            return Decimal(f"{(self.base + self.peak * shape * heat) * noise:.3f}")
        # Air conditioning: nothing at night, most in the late afternoon and evening.
        shape = max(0.0, math.sin(math.pi * (local_hour - 11) / 12)) ** 2 if 11 <= local_hour < 23 else 0.0
        return Decimal(round((self.base + self.peak * shape * heat) * noise))


class MeterReadLoad:
    """``records`` meter reads over as many days as they need, and the simulated time after them."""

    def __init__(self, records: int, accounts: int = ACCOUNTS):
        self.records = records
        self.random = random.Random(SEED)
        self.accounts = [self._account(number) for number in range(accounts)]
        self.days = math.ceil(records / (accounts * 24))

    def _account(self, number: int) -> Account:
        commercial = self.random.random() < COMMERCIAL_SHARE
        if commercial:
            base, peak = self.random.uniform(3, 15), self.random.uniform(10, 60)
        else:
            base, peak = self.random.uniform(150, 500), self.random.uniform(500, 3_500)
        return Account(f"SA-{100_000 + number}", f"M-{880_000 + number * 7}", commercial, base, peak)

    @property
    def clock_now(self) -> datetime:
        """A simulated "now" after every interval and every delivery: the end of the day after the last file."""
        return local_day_bounds(FIRST_DAY + timedelta(days=self.days + 1))[1]

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        """``(key, MeterRead)`` in delivery order, ``records`` of them."""
        produced = 0
        for day_number in range(self.days):
            day_start, day_end = local_day_bounds(FIRST_DAY + timedelta(days=day_number))
            heat = self.random.uniform(0.6, 1.4)
            hours = int((day_end - day_start) / HOUR)
            delivery = self.accounts[:]
            self.random.shuffle(delivery)
            for account in delivery:
                read_at = day_end + timedelta(minutes=self.random.randint(120, 480))
                for hour in range(hours):
                    yield account.service_account_id, self._read(account, day_start + hour * HOUR, hour, heat, read_at)
                    produced += 1
                    if produced == self.records:
                        return

    def _read(self, account: Account, start: datetime, local_hour: int, heat: float, read_at: datetime) -> dict:
        return {
            "service_account_id": account.service_account_id,
            "meter_id": account.meter_id,
            "interval_start": start,
            "interval_seconds": 3600,
            "value": account.value(local_hour, heat, self.random.uniform(0.85, 1.15)),
            "unit": "KWH" if account.commercial else "WH",
            "quality": "ESTIMATED" if self.random.random() < ESTIMATED_SHARE else "ACTUAL",
            "revision": 0,
            "read_at": read_at,
            "source": "MV90" if account.commercial else "AMI",
        }
