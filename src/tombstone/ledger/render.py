"""Plain-text tables of ledger views."""

from __future__ import annotations

from tombstone.ledger.state import RequestView


def render_table(views: list[RequestView]) -> str:
    """Render one block per request: a header line, then one row per store."""
    blocks = []
    for view in views:
        state = "complete" if view.complete else "PENDING"
        if view.superseded_by:
            state += f" (superseded by {view.superseded_by})"
        lines = [f"request {view.request.request_id}  data class {view.request.data_class}  {state}",
                 f"  {'store':<20} {'status':<11} {'items':>6} {'remaining':>9}  applied at"]
        for row in view.rows:
            status = row.status.value if row.status else "PENDING"
            if not row.expected:
                status += "*"
            lines.append(
                f"  {row.store:<20} {status:<11} {_num(row.items_affected):>6} {_num(row.remaining):>9}  "
                f"{row.applied_at.isoformat(timespec='seconds') if row.applied_at else '-'}"
            )
        blocks.append("\n".join(lines))
    footer = "\n(* a store the inventory does not list for this data class)" if any(
        not r.expected for v in views for r in v.rows) else ""
    return "\n\n".join(blocks) + footer


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)
