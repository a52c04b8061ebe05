"""Procedures: multi-step operations (restore in place, rollback, deploy) with hooks and the journal."""
