"""pgrunbook: the database runbook of a Prisma + PostgreSQL application, made safe to execute."""

__version__ = "0.1.0"
