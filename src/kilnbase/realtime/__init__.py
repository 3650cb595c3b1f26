"""Realtime: Socket.IO channels with presence, publish from clients and from SQL, webhooks (InsForge's)."""
