"""Cluster mode: the operator ↔ sidecar wire protocol (pure) and the sidecar's side of it (I/O)."""
