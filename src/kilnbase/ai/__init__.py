"""The model gateway: OpenAI-compatible and InsForge-compatible routes over providers, with quotas and a ledger."""
