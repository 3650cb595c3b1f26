"""The semantic layer: what this backend holds, described for admins and coding agents."""
