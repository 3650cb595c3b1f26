"""The connection pool, the per-request session (role + claims) and the migrations."""
