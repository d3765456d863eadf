"""How long to wait before a retry: exponential backoff with optional full jitter, and the
upstream's own `Retry-After` (RFC 9110 §10.2.3).

Pure arithmetic over an injected `random.Random`; it never sleeps and never decides whether
to retry (the attempt loop does, comparing these delays with the deadline and
`max_retry_after`).
"""

from __future__ import annotations

import calendar
import math
import random
import re
import time

from sidecar.config import BackoffPolicy


class Backoff:
    """`initial × multiplier^(n-1)` capped at `max`; full jitter draws uniformly in [0, that]."""

    __slots__ = ("_capped_from", "_initial", "_jitter", "_max", "_multiplier", "_rng")

    def __init__(self, policy: BackoffPolicy, rng: random.Random) -> None:
        self._initial = policy.initial
        self._max = policy.max
        self._multiplier = policy.multiplier
        self._jitter = policy.jitter == "full"
        self._rng = rng
        # The first exponent whose backoff reaches the cap; past it, no power is computed
        # (so retry 10,000 costs the same as retry 2 and cannot overflow).
        self._capped_from: float
        if policy.initial >= policy.max:
            self._capped_from = 0
        elif policy.initial == 0 or policy.multiplier == 1:
            self._multiplier = 1.0  # the backoff never grows: keep the power trivially finite
            self._capped_from = math.inf
        else:
            growth = math.log(policy.max / policy.initial) / math.log(policy.multiplier)
            self._capped_from = math.ceil(growth)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        if retry_number < 1:
            raise ValueError(f"Backoff.delay: retry_number starts at 1, got {retry_number}")
        exponent = retry_number - 1
        if exponent >= self._capped_from:
            capped = self._max
        else:
            capped = min(self._initial * self._multiplier**exponent, self._max)
        if self._jitter:
            return self._rng.uniform(0.0, capped)
        return capped

    def __repr__(self) -> str:
        jitter = "full" if self._jitter else "none"
        return (
            f"Backoff(initial={self._initial}, max={self._max}, "
            f"multiplier={self._multiplier}, jitter={jitter})"
        )


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(?P<month>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
# The three formats of RFC 9110 §5.6.7; recipients must accept all of them.
_IMF_FIXDATE = re.compile(rf"{_DAY}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_LONG_DAY}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})")


def parse_retry_after(value: bytes, now_wall: float) -> float | None:
    """A `Retry-After` value as seconds from `now_wall` (epoch seconds); None when invalid.

    Accepts delay-seconds (`120`) and an HTTP-date in any of the three RFC 9110 formats; a
    date in the past means 0. Nothing else is guessed at: a negative, fractional or
    otherwise malformed value is None, and the caller falls back to its own backoff.
    """
    text = value.strip(b" \t")
    if text.isdigit():
        return float(text)  # a huge value becomes inf: "much longer than max_retry_after"
    try:
        date = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    at = _parse_http_date(date, now_wall)
    return None if at is None else max(0.0, at - now_wall)


def _parse_http_date(text: str, now_wall: float) -> float | None:
    match = _IMF_FIXDATE.fullmatch(text) or _ASCTIME.fullmatch(text)
    two_digit_year = False
    if match is None:
        match = _RFC850.fullmatch(text)
        two_digit_year = match is not None
    if match is None:
        return None
    year = int(match["year"])
    if two_digit_year:
        # RFC 9110 §5.6.7: a two-digit year that looks more than 50 years in the future
        # is in the past century.
        this_year = time.gmtime(now_wall).tm_year
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    month = _MONTHS[match["month"]]
    day = int(match["day"])
    if year < 1:
        return None
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if not (1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    # 60 is a leap second, which RFC 9110 allows.
    if hour > 23 or minute > 59 or second > 60:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
