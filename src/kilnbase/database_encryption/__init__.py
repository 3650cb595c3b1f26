"""Column-level encryption over the API (InsForge's `/api/database/encryption`): the list of encrypted
columns, and the rotation that rewrites their values under the current key version."""
