"""The proof ledger."""
