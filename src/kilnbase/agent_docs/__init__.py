"""Documentation for agents (`/api/docs`): what this Kilnbase server does today, written for it."""
