"""Agent keys: scoped, expiring credentials for coding agents, and the project's read-only mode for them."""
