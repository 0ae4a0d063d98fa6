"""PostgreSQL adapters: every SQL statement of the product, one module per table group.

Each table has one writing module: `deliveries` (the ledger), `status_history`,
`suppressions` (with the inbound keyword tables), `callback_outbox`, `rate_windows`
(`rate_limits`), `verifications` (`phone_verifications`), `api_key_rows` (`api_keys`),
`ingestions` and `dlq_replays`; a module that needs another table's write in its own
transaction calls that table's module with its connection. `tables` holds the Table
objects for Alembic, `engine` the engine factory and the one mapping of SQLAlchemy's,
psycopg's and the socket's errors to `DatabaseUnavailableError` (away) or
`DatabaseStatementError` (a refused statement).

One style for statements: `text()` with bound parameters. They are PostgreSQL's own
(CTEs over `unnest` arrays, ON CONFLICT, FOR UPDATE SKIP LOCKED, DISTINCT ON) and read
best as the SQL they are, which is what EXPLAIN and a DBA see; the Core expression
language would hide them behind a second syntax without making them portable. State
names are bound from `sms_relay.domain.states`, never spelled in the SQL.
"""
