"""Avro single-object encoding with fastavro.

Every value is framed as ``C3 01`` followed by the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form, then the schemaless Avro body
(Avro 1.11 specification, "Single-object encoding"). A reader finds the fingerprint among
its registered writer schemas and resolves the body against its own reader schema. So
readers and writers of different schema versions interoperate.

A Kafka tombstone (``value is None``) is never passed through a codec: callers route it
before decoding, and ``encode`` never returns ``None`` or empty bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from tombstone.errors import DecodeError, TombstoneError

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


def schema_dir() -> Path:
    """Directory of the ``.avsc`` files: packaged copy first, then the source tree."""
    packaged = resources.files("tombstone") / "_schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "schemas"


def load_schema(name: str) -> dict[str, Any]:
    """Read ``schemas/<name>.avsc`` as JSON."""
    path = schema_dir() / f"{name}.avsc"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TombstoneError(
            f"Avro schema {path} not found. Reinstall the package or run from the source tree."
        ) from None


def schema_fingerprint(parsed_schema: Any) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of a parsed schema."""
    canonical = to_parsing_canonical_form(parsed_schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class AvroCodec:
    """Encode and decode one record type in Avro single-object encoding.

    ``reader_schema`` is the schema this process writes and reads into. ``writer_schemas``
    adds older or newer versions it must be able to read; the reader schema is always known.
    Schemas are parsed once, here.
    """

    def __init__(
        self,
        reader_schema: Mapping[str, Any],
        writer_schemas: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._schema = fastavro.parse_schema(dict(reader_schema))
        self._header = MAGIC + schema_fingerprint(self._schema)
        self._writers: dict[bytes, Any] = {self._header[2:]: self._schema}
        for schema in writer_schemas:
            self.add_writer_schema(schema)

    @property
    def header(self) -> bytes:
        """Marker and fingerprint that prefix every value this codec encodes."""
        return self._header

    def add_writer_schema(self, schema: Mapping[str, Any]) -> bytes:
        """Make values written with ``schema`` readable; return its fingerprint."""
        parsed = fastavro.parse_schema(dict(schema))
        key = schema_fingerprint(parsed)
        self._writers[key] = parsed
        return key

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Encode one record; raises ``ValueError`` naming the field that does not fit."""
        out = io.BytesIO()
        out.write(self._header)
        fastavro.schemaless_writer(out, self._schema, record, strict_allow_default=True)
        return out.getvalue()

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """Decode one framed value.

        Raises:
            DecodeError: with reason ``null_value``, ``bad_magic``, ``truncated``,
                ``unknown_schema``, ``malformed`` or ``trailing_bytes``.
        """
        if value is None:
            raise DecodeError("null_value", "The value is a Kafka tombstone (null), not a record.")
        if len(value) < HEADER_SIZE:
            # A value cut inside the fingerprint still starts with the marker, so it is truncated.
            reason = "truncated" if MAGIC.startswith(value[: len(MAGIC)]) else "bad_magic"
            raise DecodeError(reason, f"The value is {len(value)} bytes, shorter than the header.")
        if value[:2] != MAGIC:
            raise DecodeError(
                "bad_magic",
                f"The value starts with {value[:2].hex()}, not the Avro single-object marker c301.",
            )
        writer = self._writers.get(value[2:HEADER_SIZE])
        if writer is None:
            raise DecodeError(
                "unknown_schema",
                f"No known writer schema has fingerprint {value[2:HEADER_SIZE].hex()}; "
                "deploy a reader that knows it, then replay the dead letter.",
            )
        body = io.BytesIO(value)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, writer, self._schema)
        except EOFError:
            raise DecodeError("truncated", "The Avro body ends before the record is complete.") from None
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise DecodeError("malformed", f"The Avro body is invalid: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(value):
            raise DecodeError(
                "trailing_bytes",
                f"{len(value) - body.tell()} bytes follow the end of the Avro record.",
            )
        return record  # type: ignore[return-value]
