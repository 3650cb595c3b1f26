"""Process-level concerns: the embedded Postgres, project keys, startup, health."""
