"""The model gateway: OpenAI- and InsForge-compatible routes over providers, with quotas and a ledger."""
