"""Records that can never be processed, mixed into a stream of valid requests.

Each scenario produces half of its valid requests, then the poison records under the same
keys (so they share partitions), then the other half. Expected for every poison record: a
dead letter with an expected reason, no ack, no store write, and the partition keeps
flowing so that every valid request behind it is proven. Subjects named only by poison
records are seeded too, so a poison record that reached the store shows up as an erasure.
"""

from __future__ import annotations

import os
import random

from tombstone.models import DeletionRequest
from tombstone.serde.codec import HEADER_SIZE, MAGIC

from tests.faults.harness import Context
from tests.faults.oracle import read_acks
from tests.faults.scenarios.common import start_ready
from tests.faults.stores import DATA_CLASS, SUBJECT_TYPE

Record = tuple[str, bytes | None, bytes | None, frozenset[str]]
DECODE_REASONS = frozenset({"null_value", "bad_magic", "truncated", "unknown_schema", "malformed",
                            "trailing_bytes", "invalid_field"})
FORGED_LINE = "FORGED-LOG-LINE"
# A record value well over the broker's default 1 MiB limit; the scenario raises the topic's limit.
OVERSIZED_VALUE_BYTES = 2 * 1024 * 1024


def _run(ctx: Context, make_poison, valid_count: int = 20) -> list[DeletionRequest]:
    valid = ctx.subjects(valid_count)
    ctx.seed(valid)
    ctx.seed(ctx.subjects(5, "b"))
    requests = ctx.build_requests(valid)
    keys = [r.kafka_key.encode() for r in requests]
    half = len(requests) // 2
    ctx.submit(requests[:half])
    ctx.produce_raw(make_poison(keys))
    ctx.submit(requests[half:])
    start_ready(ctx)
    ctx.wait_settled()
    return requests


def _poison_request(ctx: Context, label: str = "p", subject_id: str | None = None,
                    ) -> tuple[DeletionRequest, bytes, bytes]:
    """Return a seeded subject's request, its record key and its encoding, never validated.

    With ``subject_id`` the request names that id even when the model would reject it,
    because ``model_copy`` does not validate and the encoder writes what it is given.
    """
    subject = subject_id if subject_id is not None else ctx.subjects(1, label)[0]
    ctx.seed([subject])
    request = ctx.build_requests(ctx.subjects(1, label))[0].model_copy(update={"subject_id": subject})
    ctx.produced[request.request_id] = request
    return request, request.kafka_key.encode("utf-8"), ctx.encode_raw(request)


def _expect_no_ack(ctx: Context, requests: list[DeletionRequest]) -> None:
    ids = {r.request_id for r in requests}
    acked = [a for a in read_acks(ctx.kafka()) if a.request_id in ids]
    ctx.expect("no ack for a poison record", not acked, f"{len(acked)} acks for poison requests")


def random_bytes(ctx: Context) -> None:
    """Random values of 1 to 300 bytes, some behind the Avro marker, and five null values."""
    rng = random.Random(11)

    def poison(keys: list[bytes]) -> list[Record]:
        records: list[Record] = []
        for n in range(30):
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
            value = MAGIC + body if n % 3 == 0 else body
            records.append((f"random-{n}", keys[n % len(keys)], value, DECODE_REASONS))
        # A null value is a Kafka tombstone: skipped by design, never dead-lettered.
        records.extend((f"null-{n}", keys[n], None, frozenset()) for n in range(5))
        return records

    _run(ctx, poison)


def truncated_avro_every_cut(ctx: Context) -> None:
    """One valid request cut at every byte offset, then the whole request on the same partition."""
    holder: list[DeletionRequest] = []

    def poison(keys: list[bytes]) -> list[Record]:
        subject = ctx.subjects(1, "p")[0]
        ctx.seed([subject])
        request = ctx.build_requests([subject])[0]
        holder.append(request)
        value = ctx.serde.serialize(request)
        reasons = frozenset({"truncated", "malformed"})
        return [(f"cut-{cut}", request.kafka_key.encode(), value[:cut], reasons) for cut in range(len(value))]

    _run(ctx, poison)
    ctx.submit(holder)
    ctx.wait_settled()
    ctx.note(f"{len(ctx.poison)} cut points")


def trailing_garbage(ctx: Context) -> None:
    requests: list[DeletionRequest] = []

    def poison(keys: list[bytes]) -> list[Record]:
        records = []
        for n in range(10):
            request, key, value = _poison_request(ctx)
            requests.append(request)
            records.append((f"trailing-{n}", key, value + os.urandom(n + 1), frozenset({"trailing_bytes"})))
        return records

    _run(ctx, poison)
    _expect_no_ack(ctx, requests)


def json_instead_of_avro(ctx: Context) -> None:
    requests: list[DeletionRequest] = []

    def poison(keys: list[bytes]) -> list[Record]:
        records = []
        for n in range(10):
            request, key, _ = _poison_request(ctx)
            requests.append(request)
            records.append((f"json-{n}", key, request.model_dump_json().encode(), frozenset({"bad_magic"})))
        return records

    _run(ctx, poison)
    _expect_no_ack(ctx, requests)


def unknown_schema_fingerprint(ctx: Context) -> None:
    requests: list[DeletionRequest] = []

    def poison(keys: list[bytes]) -> list[Record]:
        records = []
        for n in range(10):
            request, key, value = _poison_request(ctx)
            requests.append(request)
            records.append((f"fingerprint-{n}", key, MAGIC + os.urandom(8) + value[HEADER_SIZE:],
                            frozenset({"unknown_schema"})))
        return records

    _run(ctx, poison)
    _expect_no_ack(ctx, requests)


def oversized_keys_and_values(ctx: Context) -> None:
    """A 2 MiB value, a 3000-byte key, and subject ids of 3000 and 257 bytes."""
    requests: list[DeletionRequest] = []

    def poison(keys: list[bytes]) -> list[Record]:
        records: list[Record] = [("value-2MiB", keys[0], MAGIC + bytes(8) + os.urandom(OVERSIZED_VALUE_BYTES),
                                  frozenset({"unknown_schema"}))]
        request, _, value = _poison_request(ctx)
        requests.append(request)
        long_key = f"{SUBJECT_TYPE}:{ctx.suite.canary}-{'k' * 3000}/{DATA_CLASS}".encode()
        records.append(("key-3000B", long_key, value, frozenset({"key_mismatch"})))
        for size in (3000, 257):
            subject_id = ctx.suite.canary + "-" + "x" * (size - len(ctx.suite.canary) - 1)
            request, key, value = _poison_request(ctx, subject_id=subject_id)
            requests.append(request)
            records.append((f"subject-{size}B", key, value, frozenset({"invalid_field"})))
        return records

    _run(ctx, poison)
    _expect_no_ack(ctx, requests)


def control_characters_in_subject(ctx: Context) -> None:
    """Subject ids with NUL, CR LF (a forged log line), ANSI escapes, DEL, NEL and U+2028."""
    requests: list[DeletionRequest] = []
    inserts = ["\x00nul", f"\r\n{FORGED_LINE} INFO tombstone.worker.loop: all requests proven",
               "\x1b[31mred\x1b[0m", "\x7fdel", "\x85nel", "\u2028ls", "\ttab"]

    def poison(keys: list[bytes]) -> list[Record]:
        records = []
        for n, insert in enumerate(inserts):
            subject_id = f"{ctx.subjects(1, 'c')[0]}{insert}"
            request, key, value = _poison_request(ctx, subject_id=subject_id)
            requests.append(request)
            records.append((f"control-{n}", key, value, frozenset({"invalid_field"})))
        return records

    _run(ctx, poison)
    _expect_no_ack(ctx, requests)
    forged = [w.label for w in ctx.workers if any(line.startswith(FORGED_LINE) for line in w.log().splitlines())]
    ctx.expect("no forged log line", not forged,
               f"workers {forged} wrote a line that a subject id forged" if forged else "")
