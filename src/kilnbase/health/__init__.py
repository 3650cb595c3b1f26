"""`GET /api/health`: whether this server can serve, asked of the database rather than assumed."""
