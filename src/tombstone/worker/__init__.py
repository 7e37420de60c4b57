"""The per-store worker."""
