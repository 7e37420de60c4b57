"""Conversion of subject ids to the type of a relational store's subject column."""

from __future__ import annotations

import re

from tombstone.errors import PermanentRecordError
from tombstone.models import DeletionRequest
from tombstone.spec import TableMapping

# Canonical decimal form only. Python's int() also accepts "+17", " 17", "1_7" and
# non-ASCII digits, which would make a request for one subject delete another's rows.
_CANONICAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)", re.ASCII)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def parse_integer_id(subject_id: str) -> int | None:
    """Parse a subject id written as a canonical decimal 64-bit integer, else return None."""
    if not _CANONICAL_INTEGER.fullmatch(subject_id) or subject_id == "-0":
        return None
    value = int(subject_id, 10)
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


def bind_subject_id(mapping: TableMapping, request: DeletionRequest) -> str | int:
    """Convert a subject id to the column's type, so a mismatch cannot match zero rows silently.

    Raises:
        PermanentRecordError: the table keys subjects by a 64-bit integer column and the
            subject id is not a canonical decimal integer in that range.
    """
    if mapping.subject_id_type == "text":
        return request.subject_id
    value = parse_integer_id(request.subject_id)
    if value is None:
        raise PermanentRecordError(
            "subject_id_type",
            f"Table {mapping.table} keys subjects by a 64-bit integer column, but the subject "
            f"id of request {request.request_id} is not a decimal integer in that range "
            "(digits only, no sign other than '-', no leading zeros). Fix the request's subject id.",
            request.request_id,
        )
    return value
