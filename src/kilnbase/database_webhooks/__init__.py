"""Database webhooks: a row trigger on an app table that POSTs each change to a URL, durably."""
