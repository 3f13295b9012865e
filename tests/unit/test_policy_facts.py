"""The person's age the policy reads (F14b, Youth Act 1285/2016 11 § 4 mom.: under 29; a minor under 18),
counted in whole years at the decision's clock."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from broker.services.persons import age, is_minor


@pytest.mark.parametrize(
    ("born", "at", "years"),
    [
        (date(1997, 6, 1), datetime(2026, 5, 31, 23, 59, tzinfo=UTC), 28),  # the day before the 29th birthday
        (date(1997, 6, 1), datetime(2026, 6, 1, 0, 0, tzinfo=UTC), 29),  # on it
        (date(2008, 2, 29), datetime(2026, 2, 28, 12, 0, tzinfo=UTC), 17),  # born on a leap day
        (date(2008, 2, 29), datetime(2026, 3, 1, 12, 0, tzinfo=UTC), 18),
    ],
)
def test_age_is_counted_in_whole_years_at_the_clock(born: date, at: datetime, years: int) -> None:
    assert age(born, at) == years
    assert is_minor(born, at) == (years < 18)
