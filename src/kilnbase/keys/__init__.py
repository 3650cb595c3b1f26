"""The project's keys and what they sign or seal: key material, JWTs, secrets at rest."""
