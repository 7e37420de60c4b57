"""The independent oracle: compares what the suite asked for with the store and the topics.

It reads the proofs and dead-letter topics on the broker's direct listener and probes the
store directly. It never queries a worker and never trusts an ack on its own. Figures, per
scenario, after the run settled and every worker stopped:

- ``lost``: valid requests whose subject still has an item written at or before the
  request's cut-off.
- ``false_proofs``: (request, store) pairs acked DELETED, ABSENT or PURGED while such an
  item remains, plus pairs acked for a request id the suite never produced.
- ``duplicate_effects``: items that no valid request covers but that are gone. They were
  written after every cut-off for their subject, or belong to a subject never requested.
  Also (request, store) pairs with two terminal acks that differ in status, items
  affected or remaining.
- ``dead_lettered``: records on the dead-letter topic.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from tombstone.errors import DecodeError
from tombstone.models import TERMINAL_STATUSES, AckStatus, DeadLetter, DeletionAck
from tombstone.kafka.reader import TopicReader
from tombstone.serde import AckSerde, DeadLetterSerde
from tombstone.settings import KafkaSettings
from tombstone.stores.base import cutoff_ms

from tests.faults.stores import SUBJECT_TYPE

logger = logging.getLogger(__name__)

CLAIMS_GONE = frozenset({AckStatus.DELETED, AckStatus.ABSENT, AckStatus.PURGED})


@dataclass
class RawRecord:
    """A record as the broker returned it, for the privacy scan."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class TopicContents:
    acks: list[DeletionAck] = field(default_factory=list)
    undecodable_acks: int = 0
    dead_letters: list[tuple[DeadLetter, list[tuple[str, bytes | None]]]] = field(default_factory=list)
    raw_proofs: list[RawRecord] = field(default_factory=list)
    raw_dead_letters: list[RawRecord] = field(default_factory=list)


def _read(kafka: KafkaSettings, topic: str) -> list[Message]:
    reader = TopicReader(kafka, [topic], client_id="fault-oracle")
    try:
        return list(reader.read_new(60))
    finally:
        reader.close()


def read_acks(kafka: KafkaSettings) -> list[DeletionAck]:
    serde = AckSerde()
    acks = []
    for message in _read(kafka, kafka.proofs_topic):
        if message.value() is not None:
            try:
                acks.append(serde.deserialize(message.value()))
            except DecodeError:
                continue
    return acks


def read_topics(kafka: KafkaSettings) -> TopicContents:
    contents = TopicContents()
    ack_serde, dead_letter_serde = AckSerde(), DeadLetterSerde()
    for message in _read(kafka, kafka.proofs_topic):
        contents.raw_proofs.append(RawRecord(message.key(), message.value(), list(message.headers() or [])))
        if message.value() is None:
            continue
        try:
            contents.acks.append(ack_serde.deserialize(message.value()))
        except DecodeError:
            contents.undecodable_acks += 1
    for message in _read(kafka, kafka.dead_letter_topic):
        headers = list(message.headers() or [])
        contents.raw_dead_letters.append(RawRecord(message.key(), message.value(), headers))
        contents.dead_letters.append((dead_letter_serde.deserialize(message.value()), headers))
    return contents


@dataclass
class Figures:
    requests: int = 0
    lost: int = 0
    duplicate_effects: int = 0
    false_proofs: int = 0
    dead_lettered: int = 0
    proven: int = 0
    acks: int = 0
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "lost": self.lost, "duplicate_effects": self.duplicate_effects,
                "false_proofs": self.false_proofs, "dead_lettered": self.dead_lettered,
                "proven": self.proven, "acks": self.acks}


def evaluate(ctx: Any, contents: TopicContents) -> Figures:
    """Compute the scenario's figures and add the oracle's own expectations to ``ctx``."""
    figures = Figures(requests=len(ctx.valid), dead_lettered=len(contents.dead_letters), acks=len(contents.acks))
    store_name = ctx.store.name
    present = ctx.store.present(ctx.items)
    valid = [ctx.produced[rid] for rid in sorted(ctx.valid)]
    cutoffs_by_subject: dict[str, list[int]] = defaultdict(list)
    for request in valid:
        cutoffs_by_subject[request.subject_id].append(cutoff_ms(request))
    items_by_subject = defaultdict(list)
    for item in ctx.items:
        items_by_subject[item.subject_id].append(item)

    def remaining_at_cutoff(subject_id: str, cutoff: int) -> list[str]:
        return [i.item_id for i in items_by_subject.get(subject_id, [])
                if i.written_at_ms <= cutoff and i.item_id in present]

    # Lost: a valid request whose subject keeps data at or before its cut-off.
    for request in valid:
        left = remaining_at_cutoff(request.subject_id, cutoff_ms(request))
        if left:
            figures.lost += 1
            figures.details.append(f"lost: request {request.request_id} leaves {len(left)} items at or before "
                                   "its cut-off")

    # Wrongful erasures: gone, but no valid request's cut-off covers the item.
    for item in ctx.items:
        covered = any(item.written_at_ms <= cut for cut in cutoffs_by_subject.get(item.subject_id, []))
        if item.item_id not in present and not covered:
            figures.duplicate_effects += 1
            figures.details.append(f"erased without a covering request: an item written at {item.written_at_ms} "
                                   f"of a subject with {len(cutoffs_by_subject.get(item.subject_id, []))} valid "
                                   "requests, none with a cut-off at or after that time")

    # Acks: false proofs and differing terminal acks.
    by_pair: dict[tuple[str, str], list[DeletionAck]] = defaultdict(list)
    for ack in contents.acks:
        by_pair[(ack.request_id, ack.store)].append(ack)
    for (request_id, store), acks in sorted(by_pair.items()):
        request = ctx.produced.get(request_id)
        if request is None:
            figures.false_proofs += 1
            figures.details.append(f"false proof: {len(acks)} acks from store {store} for request id "
                                   f"{request_id}, which the suite never produced")
            continue
        claims = [a for a in acks if a.status in CLAIMS_GONE]
        if claims and store == store_name:
            left = remaining_at_cutoff(request.subject_id, cutoff_ms(request))
            if left:
                figures.false_proofs += 1
                figures.details.append(f"false proof: request {request_id} acked {claims[0].status.value} by "
                                       f"store {store} while {len(left)} items at or before its cut-off remain")
        terminal = {(a.status, a.items_affected, a.remaining) for a in acks if a.status in TERMINAL_STATUSES}
        if len(terminal) > 1:
            figures.duplicate_effects += 1
            figures.details.append(f"differing terminal acks for request {request_id} in store {store}: "
                                   + ", ".join(f"{s.value}/{n} items/{r} left" for s, n, r in sorted(terminal)))
    if contents.undecodable_acks:
        figures.false_proofs += contents.undecodable_acks
        figures.details.append(f"{contents.undecodable_acks} records on the proofs topic are not valid acks")

    # Completeness: every valid request has a terminal ack from the store, unless superseded.
    proven = {rid for (rid, store), acks in by_pair.items()
              if store == store_name and any(a.status in TERMINAL_STATUSES for a in acks)}
    figures.proven = len(proven & ctx.valid)
    if ctx.expect_all_proven:
        unproven = ctx.valid - proven - ctx.superseded
        ctx.expect("every valid request proven", not unproven,
                   f"{len(unproven)} of {len(ctx.valid)} valid requests have no terminal ack" if unproven else "")

    _check_poison(ctx, contents)
    _check_product_scan(ctx, present)
    return figures


def _check_poison(ctx: Any, contents: TopicContents) -> None:
    """Every poison record is on the dead-letter topic with an expected reason, and nothing else is."""
    positions = {(p.partition, p.offset) for p in ctx.poison}
    extra = [dl for dl, _ in contents.dead_letters
             if (dl.source_partition, dl.source_offset) not in positions]
    ctx.expect("no valid record dead-lettered", not extra,
               f"{len(extra)} dead letters name records that are not poison (reasons "
               f"{sorted({dl.reason for dl in extra})})" if extra else "")
    if not ctx.poison:
        return
    seen: dict[tuple[int, int], set[str]] = defaultdict(set)
    topic = ctx.kafka().requests_topic
    for dead_letter, _ in contents.dead_letters:
        if dead_letter.source_topic == topic:
            seen[(dead_letter.source_partition, dead_letter.source_offset)].add(dead_letter.reason)
    missing = [p for p in ctx.poison if (p.partition, p.offset) not in seen]
    wrong = [p for p in ctx.poison if (p.partition, p.offset) in seen and not seen[(p.partition, p.offset)] & p.reasons]
    ctx.expect("every poison record dead-lettered", not missing,
               f"{len(missing)} of {len(ctx.poison)} poison records are not on the dead-letter topic "
               f"(first: {missing[0].label})" if missing else "")
    ctx.expect("dead-letter reasons as expected", not wrong,
               "; ".join(f"{p.label}: got {sorted(seen[(p.partition, p.offset)])}, expected one of {sorted(p.reasons)}"
                         for p in wrong[:5]))


def _check_product_scan(ctx: Any, present: set[str]) -> None:
    """The product's ``scan_subject`` must count what the oracle's direct probe found."""
    subjects = sorted({item.subject_id for item in ctx.items})
    try:
        scanned = ctx.store.scan_subjects(f"{SUBJECT_TYPE}:{sid}" for sid in subjects)
    except Exception as exc:  # the product's scan failing is a finding, not a crash of the suite
        ctx.expect("store scan_subject agrees with the direct probe", False, f"scan failed: {type(exc).__name__}")
        return
    direct = defaultdict(int)
    for item in ctx.items:
        if item.item_id in present:
            direct[item.subject_id] += 1
    differ = [sid for sid in subjects if scanned[f"{SUBJECT_TYPE}:{sid}"] != direct[sid]]
    ctx.expect("store scan_subject agrees with the direct probe", not differ,
               f"{len(differ)} subjects differ" if differ else "")
