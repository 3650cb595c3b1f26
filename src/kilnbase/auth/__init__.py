"""Users, sessions and tokens; the JWKS document."""
