"""Monitoring the backup schedule: check (pure evaluation + its I/O), metrics, notifications."""
