"""Who is calling (a Principal from a credential) and who is acting (an Actor, for services and audit)."""
