"""The advisor: a linter of the app's database (security, performance, health), InsForge's `/api/advisor`."""
