"""Edge functions: definitions (`/api/functions`), warm Deno workers, invocation (`/functions/:slug`),
logs."""
