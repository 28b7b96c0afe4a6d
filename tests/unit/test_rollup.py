"""The notification status roll-up rule, pure: every row of the README's table.

The rule is "first that holds", so each row is checked alone and against the
rows below it that would also hold.
"""

from __future__ import annotations

import itertools

import pytest

from models.enums import IN_FLIGHT, DeliveryStatus, NotificationStatus
from models.rollup import NotificationChange, error_message, roll_up_status

D = DeliveryStatus
N = NotificationStatus


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], NotificationStatus.PENDING),
        ([DeliveryStatus.QUEUED], NotificationStatus.PENDING),
        ([DeliveryStatus.DELIVERED, DeliveryStatus.FAILED], NotificationStatus.DELIVERED),
        ([DeliveryStatus.SENT, DeliveryStatus.SENDING], NotificationStatus.SENT),
        ([DeliveryStatus.FAILED, DeliveryStatus.SENDING], NotificationStatus.PENDING),
        ([DeliveryStatus.FAILED, DeliveryStatus.CANCELLED], NotificationStatus.FAILED),
        ([DeliveryStatus.CANCELLED, DeliveryStatus.CANCELLED], NotificationStatus.CANCELLED),
    ],
)
def test_roll_up_rule(statuses: list[DeliveryStatus], expected: NotificationStatus) -> None:
    assert roll_up_status(statuses) is expected


# The README's table, in order: (delivery statuses for which the row holds, status).
README_TABLE = [
    ("at least one channel delivered", [D.DELIVERED], N.DELIVERED),
    ("at least one channel sent", [D.SENT], N.SENT),
    ("a channel still queued or sending", [D.QUEUED], N.PENDING),
    ("a channel still queued or sending", [D.SENDING], N.PENDING),
    ("at least one channel failed", [D.FAILED], N.FAILED),
    ("every channel cancelled", [D.CANCELLED], N.CANCELLED),
]


@pytest.mark.parametrize(("rule", "statuses", "expected"), README_TABLE)
def test_each_row_of_the_readme_table_alone(
    rule: str, statuses: list[DeliveryStatus], expected: NotificationStatus
) -> None:
    assert roll_up_status(statuses) is expected, rule
    assert roll_up_status(statuses * 3) is expected, rule


@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_first_row_that_holds_wins(count: int) -> None:
    # Every mix of delivery statuses: the answer is the first row whose
    # condition holds, whatever the other channels are.
    for statuses in itertools.product(list(DeliveryStatus), repeat=count):
        if D.DELIVERED in statuses:
            expected = N.DELIVERED
        elif D.SENT in statuses:
            expected = N.SENT
        elif any(st in IN_FLIGHT for st in statuses):
            expected = N.PENDING
        elif D.FAILED in statuses:
            expected = N.FAILED
        else:
            assert set(statuses) == {D.CANCELLED}
            expected = N.CANCELLED
        assert roll_up_status(list(statuses)) is expected, statuses


def test_a_notification_without_deliveries_is_pending() -> None:
    assert roll_up_status([]) is N.PENDING


def test_in_flight_is_queued_and_sending() -> None:
    assert set(IN_FLIGHT) == {D.QUEUED, D.SENDING}


def test_the_last_error_wins_with_its_channel() -> None:
    change = NotificationChange(error="sms: 503")
    assert error_message("email: bounced", change) == "sms: 503"


def test_an_error_is_cleared_when_its_channel_later_succeeds() -> None:
    assert error_message("sms: 503", NotificationChange(recovered={"sms"})) is None


def test_an_error_of_another_channel_stays() -> None:
    assert error_message("sms: 503", NotificationChange(recovered={"email"})) == "sms: 503"
    assert error_message(None, NotificationChange(recovered={"email"})) is None
