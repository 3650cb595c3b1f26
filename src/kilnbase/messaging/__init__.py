"""The messaging outbox: transactional messages queued durably and sent by a worker, with retries and a
dead-letter table."""
