"""Edge plumbing shared by every capability: credentials -> Principal, error shapes, request log."""
