"""Numbered schema migrations. Append only: a shipped migration is never edited."""

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE planograms (
    version INTEGER PRIMARY KEY, doc TEXT NOT NULL, applied_at TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE stock (
    slot_id TEXT PRIMARY KEY, sku_id TEXT NOT NULL, count INTEGER NOT NULL CHECK (count >= 0),
    capacity INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, disabled_reason TEXT,
    jam_count INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
    total_amount INTEGER NOT NULL, currency TEXT NOT NULL, payment_ref TEXT NOT NULL DEFAULT '',
    refund_due INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
    session_id TEXT, offline INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX orders_created ON orders(created_at);
CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders(order_id), line_no INTEGER NOT NULL,
    sku_id TEXT NOT NULL, slot_id TEXT NOT NULL, qty INTEGER NOT NULL, unit_price INTEGER NOT NULL,
    status TEXT NOT NULL, PRIMARY KEY (order_id, line_no));
CREATE TABLE vend_journal (
    journal_id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL REFERENCES orders(order_id),
    slot_id TEXT NOT NULL, board_seq INTEGER NOT NULL UNIQUE, action TEXT NOT NULL DEFAULT 'vend',
    state TEXT NOT NULL, outcome TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX vend_journal_open ON vend_journal(state);
CREATE TABLE events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, at TEXT NOT NULL,
    kind TEXT NOT NULL, severity TEXT NOT NULL, source TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX events_kind ON events(kind, event_id);
CREATE TABLE alarms (
    alarm_key TEXT PRIMARY KEY, kind TEXT NOT NULL, severity TEXT NOT NULL, active INTEGER NOT NULL,
    raised_at TEXT NOT NULL, cleared_at TEXT, message TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE outbox (
    record_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, kind TEXT NOT NULL, priority INTEGER NOT NULL,
    created_at TEXT NOT NULL, payload TEXT NOT NULL, acked_at TEXT, parked_reason TEXT);
CREATE INDEX outbox_pending ON outbox(acked_at, parked_reason, priority, seq);
CREATE TABLE commands (
    command_id TEXT PRIMARY KEY, name TEXT NOT NULL, received_at TEXT NOT NULL,
    status TEXT NOT NULL, result TEXT NOT NULL);
"""),
    (2, """
CREATE TABLE users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, created_at TEXT NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0, locked_until REAL NOT NULL DEFAULT 0);
CREATE TABLE web_sessions (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE telemetry_1min (
    minute TEXT NOT NULL, point TEXT NOT NULL, avg REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    PRIMARY KEY (minute, point));
CREATE TABLE lockouts (
    lockout_id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, started_at TEXT NOT NULL,
    cleared_at TEXT, cleared_by TEXT, reason TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, state TEXT NOT NULL, customer_ref TEXT NOT NULL,
    limit_amount INTEGER, currency TEXT NOT NULL, offline INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE token_nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL);
"""),
    (3, """
CREATE TABLE token_revocations (
    kind TEXT NOT NULL CHECK (kind IN ('customer', 'kid')), value TEXT NOT NULL,
    revoked_at TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, value));
"""),
    (4, """
CREATE TABLE dex_reads (
    read_id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('interim', 'all')), last_event_id INTEGER NOT NULL,
    actor TEXT NOT NULL DEFAULT '', text TEXT NOT NULL);
CREATE TABLE dex_read_orders (
    order_id TEXT PRIMARY KEY REFERENCES orders(order_id), read_id INTEGER NOT NULL REFERENCES dex_reads(read_id));
"""),
    (5, """
ALTER TABLE vend_journal ADD COLUMN sent_boot INTEGER;
ALTER TABLE vend_journal ADD COLUMN acked_boot INTEGER;
ALTER TABLE vend_journal ADD COLUMN board_slot TEXT;
ALTER TABLE vend_journal ADD COLUMN counted INTEGER;
ALTER TABLE vend_journal ADD COLUMN settled_by TEXT;
"""),
    (6, """
CREATE TABLE payment_sessions (
    payment_id TEXT PRIMARY KEY, method TEXT NOT NULL, slot_id TEXT NOT NULL, item INTEGER NOT NULL,
    amount INTEGER NOT NULL, currency TEXT NOT NULL, scaled INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('requested', 'approved', 'capturing', 'refunding', 'denied',
        'cancelled', 'captured', 'refunded', 'voided', 'capture_unknown')),
    error TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX payment_sessions_state ON payment_sessions(state);
"""),
    (7, """
CREATE TABLE haccp_hourly (
    hour TEXT NOT NULL, device TEXT NOT NULL, min_c REAL NOT NULL, max_c REAL NOT NULL, mean_c REAL NOT NULL,
    minutes INTEGER NOT NULL, minutes_above INTEGER NOT NULL, limit_c REAL NOT NULL,
    PRIMARY KEY (hour, device));
"""),
    (8, """
ALTER TABLE stock ADD COLUMN best_before TEXT;
"""),
    (9, """
ALTER TABLE order_lines ADD COLUMN price_rule TEXT NOT NULL DEFAULT '';
"""),
    (10, """
ALTER TABLE vend_journal ADD COLUMN sent_memory INTEGER;
"""),
    (11, """
ALTER TABLE stock ADD COLUMN mixed INTEGER NOT NULL DEFAULT 1;
"""),
]
