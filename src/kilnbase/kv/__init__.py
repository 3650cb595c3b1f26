"""The key-value store (InsForge's `/api/kv`): JSON values by namespace and key, with TTLs, atomic counters
and compare-and-swap; the project-global store for the API key, RLS-scoped entries for end users."""
