"""A request whose subject id fails validation must not put that id in the worker's log.

For ``invalid_field`` the ``DecodeError`` text is pydantic's message, which quotes the
subject id (``tombstone.models.check_subject_part`` names the value), so ``sort_batch``
must not log that text. The dead letter may keep the raw id in its payload; the log may not.
"""

from __future__ import annotations

import logging

import pytest

from tombstone.serde import RequestSerde

from tests.unit.test_batch import FakeMessage, make_request, sort

SECRET = "secret-subject-4711"


def _raw_request(subject_id: str) -> FakeMessage:
    """A request with ``subject_id`` encoded without validation, keyed as its worker expects."""
    request = make_request().model_copy(update={"subject_id": subject_id})
    record = request.model_dump(mode="python")
    value = RequestSerde().codec.encode(record)
    return FakeMessage(0, 5, value=value, key=f"customer:{subject_id}/customer_profile".encode())


@pytest.mark.parametrize(
    "subject_id",
    [
        pytest.param(f"{SECRET}\x00nul", id="nul"),
        pytest.param(f"{SECRET}\r\nforged", id="crlf"),
        pytest.param(SECRET + "x" * 300, id="too_long"),
    ],
)
def test_invalid_subject_id_not_logged(subject_id: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tombstone")

    batch, _ = sort([_raw_request(subject_id)])

    assert [p.reason for p in batch.poison] == ["invalid_field"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert SECRET not in logged
