"""Full-text search index store on tantivy: delete by query, one commit per batch.

Every document carries its subject key, data class and update time, so a request's data is
exactly the documents that match ``subject AND data_class AND updated_at_ms <= cut-off``.
tantivy has no transaction that could include the receipts, so they live in a
``ReceiptBook`` beside the index directory, written after the index commit.

Only one ``IndexWriter`` may exist per index directory, across processes, so the store
takes the writer in ``open`` and keeps it until ``close``. Loaders add documents through
the same store (``add_documents``) for that reason.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tantivy
from tantivy import FieldType, Occur, Query

from tombstone.errors import ConfigError, StoreError, StoreUnavailableError
from tombstone.models import DeletionRequest
from tombstone.spec import SearchStoreConfig
from tombstone.stores.base import Outcome, ReceiptBook, Store, cutoff_ms

logger = logging.getLogger(__name__)

# tantivy's IndexWriter needs at least 15 MB of heap per indexing thread. A deletion worker
# mostly deletes, which one thread handles, so the whole heap goes to one thread.
_WRITER_THREADS = 1


@dataclass(frozen=True)
class SearchDocument:
    """One indexed document of a subject, such as a support ticket or a profile."""

    doc_id: str
    subject: str  # subject key, such as "customer:17"
    data_class: str
    updated_at_ms: int
    body: str

    def __post_init__(self) -> None:
        # Checked here, so that add_documents reports a bad document as a TypeError and not
        # as a store failure that the worker would retry.
        if not isinstance(self.updated_at_ms, int) or isinstance(self.updated_at_ms, bool):
            raise TypeError(f"Document {self.doc_id!r}: updated_at_ms must be epoch ms as an int, "
                            f"not {self.updated_at_ms!r}.")
        for name in ("doc_id", "subject", "data_class", "body"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Document {self.doc_id!r}: {name} must be a str.")


def search_schema() -> tantivy.Schema:
    """Build the index schema: exact-match keys, a fast update time and a full-text body."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("doc_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("subject", stored=True, tokenizer_name="raw")
    builder.add_text_field("data_class", stored=True, tokenizer_name="raw")
    builder.add_integer_field("updated_at_ms", stored=True, indexed=True, fast=True)
    builder.add_text_field("body", tokenizer_name="default")
    return builder.build()


class SearchStore(Store):
    kind = "search"

    def __init__(self, name: str, config: SearchStoreConfig) -> None:
        super().__init__(name)
        self.config = config
        self.path = Path(config.path)
        self.receipts = ReceiptBook(self.path.parent / f"{name}.receipts.sqlite")
        self._schema = search_schema()
        self._index: tantivy.Index | None = None
        self._writer: tantivy.IndexWriter | None = None

    def open(self) -> None:
        """Open or create the index, take its writer lock and open the receipt book."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
        except OSError as exc:
            raise StoreUnavailableError(f"Search store {self.name} cannot open {self.path}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(
                f"Search store {self.name} cannot open the index at {self.path}: {exc}. "
                "If it was built with another schema, rebuild it or point path at a new directory."
            ) from exc
        index.config_reader(reload_policy="Manual")
        try:
            writer = index.writer(heap_size=self.config.writer_heap_mb * 1024 * 1024,
                                  num_threads=_WRITER_THREADS)
        except ValueError as exc:
            if "LockBusy" in str(exc):
                raise StoreUnavailableError(
                    f"Search store {self.name} failed to lock {self.path}: another IndexWriter "
                    "has it. Stop the other process, because tantivy allows one writer per index."
                ) from exc
            raise StoreError(f"Search store {self.name} cannot create an index writer: {exc}") from exc
        self._index, self._writer = index, writer
        try:
            self.receipts.open()
        except sqlite3.Error as exc:
            self.close()
            raise StoreUnavailableError(
                f"Search store {self.name} cannot open its receipts at {self.receipts.path}: {exc}"
            ) from exc

    def close(self) -> None:
        if self._writer is not None:
            # wait_merging_threads consumes the writer, and dropping the writer releases the lock.
            self._writer.wait_merging_threads()
            self._writer = None
        self._index = None
        self.receipts.close()

    @property
    def index(self) -> tantivy.Index:
        if self._index is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._index

    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            raise RuntimeError(f"Store {self.name} is not open; call open() first.")
        return self._writer

    def add_documents(self, docs: Iterable[SearchDocument]) -> int:
        """Index documents, replacing any with the same ``doc_id``, and commit them.

        Returns the number of documents added.
        """
        added = 0
        try:
            for doc in docs:
                # A delete applies to documents added before it, so this replaces an older copy.
                self.writer.delete_documents_by_term("doc_id", doc.doc_id)
                self.writer.add_document(tantivy.Document(
                    doc_id=doc.doc_id, subject=doc.subject, data_class=doc.data_class,
                    updated_at_ms=doc.updated_at_ms, body=doc.body,
                ))
                added += 1
            self._commit()
        except (OSError, ValueError) as exc:
            self._rollback()
            raise StoreUnavailableError(f"Search store {self.name} failed to add documents: {exc}") from exc
        return added

    def apply(self, requests: Sequence[DeletionRequest]) -> dict[str, Outcome]:
        """Delete each request's documents, commit once, then record receipts.

        Steps: look up receipts, count and delete per request, commit and reload the
        searcher, record receipts. A request with a receipt has its delete run again,
        but reports the receipt.
        """
        unique = list({r.request_id: r for r in requests}.values())
        try:
            receipts = self.receipts.lookup(r.request_id for r in unique)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"Search store {self.name}: receipt lookup failed: {exc}") from exc

        try:
            deleted = self._delete(unique)
            self._commit()
        except (OSError, ValueError) as exc:
            self._rollback()
            raise StoreUnavailableError(f"Search store {self.name} failed to delete: {exc}") from exc

        outcomes = {
            r.request_id: receipts.get(r.request_id) or Outcome.from_count(deleted[r.request_id])
            for r in unique
        }
        try:
            self.receipts.record(outcomes)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"Search store {self.name}: receipt write failed: {exc}") from exc
        return outcomes

    def _delete(self, requests: list[DeletionRequest]) -> dict[str, int]:
        """Queue one delete per request and count the documents each one removes.

        The queries of one subject and data class are nested by cut-off, so a document
        already matched by an earlier request of the batch is not counted again.
        """
        searcher = self._searcher()
        claimed: dict[tuple[str, str], int] = {}
        deleted: dict[str, int] = {}
        for request in requests:
            query = self._query(request.subject_key, request.data_class, cutoff_ms(request))
            matches = _count(searcher, query)
            key = (request.subject_key, request.data_class)
            deleted[request.request_id] = max(0, matches - claimed.get(key, 0))
            claimed[key] = max(matches, claimed.get(key, 0))
            self.writer.delete_documents_by_query(query)
        return deleted

    def count_remaining(self, requests: Sequence[DeletionRequest]) -> dict[str, int]:
        try:
            searcher = self._searcher()
            return {
                r.request_id: _count(searcher, self._query(r.subject_key, r.data_class, cutoff_ms(r)))
                for r in requests
            }
        except (OSError, ValueError) as exc:
            raise StoreUnavailableError(f"Search store {self.name} failed to count: {exc}") from exc

    def scan_subject(self, subject_key: str, data_class: str | None = None) -> int:
        query = Query.term_query(self._schema, "subject", subject_key)
        if data_class is not None:
            query = Query.boolean_query([(Occur.Must, query),
                                         (Occur.Must, Query.term_query(self._schema, "data_class", data_class))])
        try:
            return _count(self._searcher(), query)
        except (OSError, ValueError) as exc:
            raise StoreUnavailableError(f"Search store {self.name} failed to count: {exc}") from exc

    def _query(self, subject_key: str, data_class: str, cutoff: int) -> Query:
        return Query.boolean_query([
            (Occur.Must, Query.term_query(self._schema, "subject", subject_key)),
            (Occur.Must, Query.term_query(self._schema, "data_class", data_class)),
            (Occur.Must, Query.range_query(
                self._schema, "updated_at_ms", FieldType.Integer, None, cutoff, include_upper=True,
            )),
        ])

    def _searcher(self) -> tantivy.Searcher:
        self.index.reload()
        return self.index.searcher()

    def _commit(self) -> None:
        self.writer.commit()
        self.index.reload()

    def _rollback(self) -> None:
        try:
            self.writer.rollback()
        except (OSError, ValueError) as exc:
            logger.warning("Search store %s: rollback of uncommitted changes failed: %s", self.name, exc)


def _count(searcher: tantivy.Searcher, query: Query) -> int:
    # tantivy panics on limit=0, so ask for one hit and read the total count.
    return searcher.search(query, limit=1, count=True).count
