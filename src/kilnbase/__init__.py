"""Kilnbase: an agent-native backend, API-compatible with InsForge."""

__version__ = "0.1.0"

#: The InsForge API version this server implements; `@insforge/mcp` gates tools on it.
INSFORGE_API_VERSION = "1.5.1"
