"""Secrets at rest: encryption with a key of its own, never derived from the JWT secret."""
