"""Prisma Migrate, natively: the migrations folder, the ``_prisma_migrations`` history table exactly as
Prisma's schema engine writes it, status, deploy, resolve and lint."""
