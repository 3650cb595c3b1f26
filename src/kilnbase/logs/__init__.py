"""The structured request log and the audit log."""
