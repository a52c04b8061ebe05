"""Everything that talks to PostgreSQL: URLs, connections, client tools, catalogs, local clusters."""
