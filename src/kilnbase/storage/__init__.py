"""Storage: buckets and objects (InsForge's `/api/storage`), their bytes on local disk, access by RLS."""
