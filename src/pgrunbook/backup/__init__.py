"""Backups: the dump pipeline, manifests, storage, retention and verification."""
