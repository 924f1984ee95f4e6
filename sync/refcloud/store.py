"""SQLite (WAL) store of the reference cloud. Synchronous; the app runs it on one worker thread.

Idempotent ingest: records are unique by (machine_id, record_id); orders, stock levels and alarms
are derived views, updated in the same transaction as the record that feeds them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.core.wire import OutboxRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
  machine_id TEXT PRIMARY KEY, secret_hex TEXT NOT NULL, created_at REAL NOT NULL,
  last_seen REAL, backlog INTEGER);
CREATE TABLE IF NOT EXISTS records (
  machine_id TEXT NOT NULL, record_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
  created_at TEXT NOT NULL, priority INTEGER NOT NULL, payload TEXT NOT NULL,
  received_at REAL NOT NULL, PRIMARY KEY (machine_id, record_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_kind ON records (machine_id, kind);
CREATE TABLE IF NOT EXISTS orders (
  machine_id TEXT NOT NULL, order_id TEXT NOT NULL, record_id TEXT NOT NULL, day TEXT NOT NULL,
  total INTEGER NOT NULL, currency TEXT NOT NULL, lines TEXT NOT NULL,
  PRIMARY KEY (machine_id, order_id));
CREATE TABLE IF NOT EXISTS stock (
  machine_id TEXT NOT NULL, slot_id TEXT NOT NULL, qty INTEGER NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (machine_id, slot_id));
CREATE TABLE IF NOT EXISTS alarms (
  machine_id TEXT NOT NULL, code TEXT NOT NULL, active INTEGER NOT NULL, raised_at TEXT,
  cleared_at TEXT, detail TEXT, seq INTEGER NOT NULL, PRIMARY KEY (machine_id, code));
CREATE TABLE IF NOT EXISTS links (
  machine_id TEXT PRIMARY KEY, transport TEXT NOT NULL, state TEXT NOT NULL, changed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
  machine_id TEXT PRIMARY KEY, version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
  command_id TEXT PRIMARY KEY, machine_id TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL,
  issued_at TEXT NOT NULL, expires_at TEXT, expires_ts REAL, state TEXT NOT NULL,
  deliveries INTEGER NOT NULL DEFAULT 0, result_status TEXT, result_detail TEXT, result_at REAL);
CREATE INDEX IF NOT EXISTS commands_pending ON commands (machine_id, state);
CREATE TABLE IF NOT EXISTS token_keys (
  kid TEXT PRIMARY KEY, private_hex TEXT NOT NULL, public_b64 TEXT NOT NULL, created_at REAL NOT NULL,
  active INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS issued_tokens (
  nonce TEXT PRIMARY KEY, kid TEXT NOT NULL, scope TEXT NOT NULL, customer_ref TEXT NOT NULL,
  limit_amount INTEGER NOT NULL, currency TEXT NOT NULL, issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS token_revocations (
  kind TEXT NOT NULL, value TEXT NOT NULL, revoked_at REAL NOT NULL, reason TEXT NOT NULL,
  PRIMARY KEY (kind, value));
"""


class Store:
    """All state of the reference cloud. Not thread-safe: use from one thread."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # machines ---------------------------------------------------------------------------------
    def register_machine(self, machine_id: str, secret: bytes | None, now: float) -> bytes:
        """Create a machine or replace its secret; returns the secret."""
        secret = secret or secrets.token_bytes(32)
        self._db.execute(
            "INSERT INTO machines (machine_id, secret_hex, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (machine_id) DO UPDATE SET secret_hex = excluded.secret_hex",
            (machine_id, secret.hex(), now))
        return secret

    def secrets(self) -> dict[str, bytes]:
        """machine_id → secret, for the signing middleware's cache."""
        rows = self._db.execute("SELECT machine_id, secret_hex FROM machines")
        return {m: bytes.fromhex(s) for m, s in rows}

    def seen(self, machine_id: str, now: float, backlog: int | None) -> None:
        self._db.execute("UPDATE machines SET last_seen = ?, backlog = coalesce(?, backlog) "
                         "WHERE machine_id = ?", (now, backlog, machine_id))

    def machines(self, today: str) -> list[dict[str, Any]]:
        """Fleet overview rows: last seen, backlog, active alarms, today's sales."""
        rows = self._db.execute(
            "SELECT m.machine_id, m.last_seen, m.backlog, "
            " (SELECT count(*) FROM alarms a WHERE a.machine_id = m.machine_id AND a.active), "
            " (SELECT group_concat(code, ', ') FROM alarms a WHERE a.machine_id = m.machine_id "
            "  AND a.active), "
            " (SELECT count(*) FROM orders o WHERE o.machine_id = m.machine_id AND o.day = ?), "
            " (SELECT coalesce(sum(total), 0) FROM orders o WHERE o.machine_id = m.machine_id "
            "  AND o.day = ?), l.state "
            "FROM machines m LEFT JOIN links l USING (machine_id) ORDER BY m.machine_id",
            (today, today))
        keys = ("machine_id", "last_seen", "backlog", "active_alarms", "alarm_codes",
                "orders_today", "sales_today", "link")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ingest -----------------------------------------------------------------------------------
    def ingest(self, machine_id: str, records: Iterable[OutboxRecord], now: float) -> list[str]:
        """Store records once; returns "stored" or "duplicate" per record, in order."""
        with _tx(self._db):
            return self._ingest(machine_id, records, now)

    def ingest_many(self, batches: Iterable[tuple[str, Iterable[OutboxRecord], int | None]],
                    now: float) -> list[list[str]]:
        """Several machines' batches (machine_id, records, backlog) in one transaction (the MQTT
        worker's group commit); the answers per batch, as `ingest`. Also marks each machine seen."""
        with _tx(self._db):
            out = []
            for machine_id, records, backlog in batches:
                out.append(self._ingest(machine_id, records, now))
                self.seen(machine_id, now, backlog)
            return out

    def set_link(self, machine_id: str, transport: str, state: str, now: float) -> None:
        """The machine's MQTT status (birth `online`, Last Will or goodbye `offline`)."""
        self._db.execute(
            "INSERT INTO links VALUES (?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET "
            "transport = excluded.transport, state = excluded.state, changed_at = excluded.changed_at",
            (machine_id, transport, state, now))

    def _ingest(self, machine_id: str, records: Iterable[OutboxRecord], now: float) -> list[str]:
        out = []
        for r in records:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (machine_id, r.record_id, r.seq, r.kind, r.created_at, r.priority,
                 json.dumps(r.payload, separators=(",", ":")), now))
            if cur.rowcount == 0:
                out.append("duplicate")
                continue
            out.append("stored")
            self._derive(machine_id, r)
        return out

    def _derive(self, machine_id: str, r: OutboxRecord) -> None:
        p = r.payload
        if r.kind == "order":
            if p.get("status", "completed") != "completed":
                return  # needs_review, void, failed: nothing to charge (a reviewed basket comes again, completed)
            self._db.execute(
                "INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)",
                (machine_id, p["order_id"], r.record_id, r.created_at[:10], p["total"],
                 p.get("currency", "EUR"), json.dumps(p["lines"])))
        elif r.kind == "stock":
            for slot_id, qty in p["levels"].items():
                self._db.execute(
                    "INSERT INTO stock VALUES (?, ?, ?, ?) ON CONFLICT (machine_id, slot_id) "
                    "DO UPDATE SET qty = excluded.qty, seq = excluded.seq "
                    "WHERE excluded.seq > stock.seq", (machine_id, slot_id, qty, r.seq))
        elif r.kind == "alarm":
            raised = p["state"] == "raised"
            self._db.execute(
                "INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (machine_id, code) "
                "DO UPDATE SET active = excluded.active, raised_at = coalesce(excluded.raised_at, "
                "alarms.raised_at), cleared_at = excluded.cleared_at, detail = excluded.detail, "
                "seq = excluded.seq WHERE excluded.seq > alarms.seq",
                (machine_id, p["code"], int(raised), r.created_at if raised else None,
                 None if raised else r.created_at, json.dumps(p.get("detail", {})), r.seq))

    # views ------------------------------------------------------------------------------------
    def records_summary(self, machine_id: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT kind, count(*), count(DISTINCT record_id) FROM records "
                                "WHERE machine_id = ? GROUP BY kind", (machine_id,)).fetchall()
        by_kind = {k: n for k, n, _ in rows}
        return {"total": sum(by_kind.values()), "by_kind": by_kind}

    def record_ids(self, machine_id: str) -> list[str]:
        rows = self._db.execute("SELECT record_id FROM records WHERE machine_id = ? ORDER BY seq",
                                (machine_id,))
        return [r[0] for r in rows]

    def orders(self, machine_id: str) -> dict[str, Any]:
        """Order count, sum (minor units) and quantity/revenue by SKU."""
        count, total = self._db.execute(
            "SELECT count(*), coalesce(sum(total), 0) FROM orders WHERE machine_id = ?",
            (machine_id,)).fetchone()
        by_sku: dict[str, dict[str, int]] = {}
        for (lines,) in self._db.execute("SELECT lines FROM orders WHERE machine_id = ?",
                                         (machine_id,)):
            for line in json.loads(lines):
                agg = by_sku.setdefault(line["sku_id"], {"qty": 0, "revenue": 0})
                agg["qty"] += line["qty"]
                agg["revenue"] += line["qty"] * line["unit_price"]
        return {"count": count, "total": total, "by_sku": by_sku}

    def offline_orders(self, machine_id: str) -> dict[str, Any]:
        """Orders the machine authorized offline (signed QR tokens): count, total, ids and customers."""
        rows = self._db.execute(
            "SELECT o.order_id, o.total, json_extract(r.payload, '$.payment_ref') FROM orders o "
            "JOIN records r ON r.machine_id = o.machine_id AND r.record_id = o.record_id "
            "WHERE o.machine_id = ? AND json_extract(r.payload, '$.offline') = 1 ORDER BY r.seq",
            (machine_id,)).fetchall()
        return {"count": len(rows), "total": sum(r[1] for r in rows),
                "orders": [{"order_id": o, "total": t, "customer_ref": c} for o, t, c in rows]}

    def stock(self, machine_id: str) -> dict[str, int]:
        rows = self._db.execute("SELECT slot_id, qty FROM stock WHERE machine_id = ? "
                                "ORDER BY slot_id", (machine_id,))
        return dict(rows.fetchall())

    def alarms(self, machine_id: str) -> dict[str, list[dict[str, Any]]]:
        rows = self._db.execute("SELECT code, active, raised_at, cleared_at, detail FROM alarms "
                                "WHERE machine_id = ? ORDER BY code", (machine_id,))
        out: dict[str, list[dict[str, Any]]] = {"active": [], "cleared": []}
        for code, active, raised_at, cleared_at, detail in rows:
            item = {"code": code, "raised_at": raised_at, "cleared_at": cleared_at,
                    "detail": json.loads(detail or "{}")}
            out["active" if active else "cleared"].append(item)
        return out

    # config -----------------------------------------------------------------------------------
    def config(self, machine_id: str) -> tuple[int, dict[str, Any]] | None:
        row = self._db.execute("SELECT version, doc FROM configs WHERE machine_id = ?",
                               (machine_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def put_config(self, machine_id: str, doc: Mapping[str, Any]) -> int:
        """Store a new config version (the doc's `version` is set to it); returns the version."""
        with _tx(self._db):
            row = self._db.execute("SELECT version FROM configs WHERE machine_id = ?",
                                   (machine_id,)).fetchone()
            version = (row[0] if row else 0) + 1
            stored = dict(doc, version=version)
            self._db.execute(
                "INSERT INTO configs VALUES (?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET "
                "version = excluded.version, doc = excluded.doc",
                (machine_id, version, json.dumps(stored)))
        return version

    # commands ---------------------------------------------------------------------------------
    def enqueue_command(self, machine_id: str, name: str, args: Mapping[str, Any],
                        issued_at: str, expires_at: str | None, expires_ts: float | None) -> str:
        command_id = uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO commands (command_id, machine_id, name, args, issued_at, expires_at, "
            "expires_ts, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
            (command_id, machine_id, name, json.dumps(args), issued_at, expires_at, expires_ts))
        return command_id

    def pending_commands(self, machine_id: str, now: float) -> list[dict[str, Any]]:
        """Unanswered, unexpired commands; counts a delivery for each."""
        with _tx(self._db):
            self._db.execute("UPDATE commands SET state = 'expired' WHERE machine_id = ? AND "
                             "state = 'pending' AND expires_ts IS NOT NULL AND expires_ts < ?",
                             (machine_id, now))
            rows = self._db.execute(
                "SELECT command_id, name, args, issued_at, expires_at FROM commands "
                "WHERE machine_id = ? AND state = 'pending' ORDER BY rowid",
                (machine_id,)).fetchall()
            self._db.executemany("UPDATE commands SET deliveries = deliveries + 1 "
                                 "WHERE command_id = ?", [(r[0],) for r in rows])
        return [{"command_id": c, "name": n, "args": json.loads(a), "issued_at": i,
                 "expires_at": e} for c, n, a, i, e in rows]

    def machines_with_pending_commands(self, now: float) -> list[str]:
        """Machines that have unanswered, unexpired commands (the MQTT side re-delivers them)."""
        rows = self._db.execute("SELECT DISTINCT machine_id FROM commands WHERE state = 'pending' AND "
                                "(expires_ts IS NULL OR expires_ts >= ?)", (now,))
        return [r[0] for r in rows]

    def post_result(self, machine_id: str, command_id: str, status: str,
                    detail: Mapping[str, Any], now: float) -> bool:
        """Close a command with the machine's result; False if unknown for this machine."""
        cur = self._db.execute(
            "UPDATE commands SET state = 'done', result_status = ?, result_detail = ?, "
            "result_at = ? WHERE command_id = ? AND machine_id = ?",
            (status, json.dumps(detail), now, command_id, machine_id))
        return cur.rowcount == 1

    def commands(self, machine_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT command_id, name, args, state, deliveries, result_status, result_detail "
            "FROM commands WHERE machine_id = ? ORDER BY rowid", (machine_id,))
        return [{"command_id": c, "name": n, "args": json.loads(a), "state": s, "deliveries": d,
                 "result_status": rs, "result_detail": json.loads(rd) if rd else None}
                for c, n, a, s, d, rs, rd in rows]

    # offline tokens ---------------------------------------------------------------------------
    def token_key(self, now: float) -> tuple[str, Ed25519PrivateKey]:
        """The active fleet signing key (kid, key); generated on first use and kept in the store."""
        row = self._db.execute("SELECT kid, private_hex FROM token_keys WHERE active = 1 "
                               "ORDER BY created_at DESC LIMIT 1").fetchone()
        if row is not None:
            return row[0], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(row[1]))
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        kid = hashlib.sha256(public).hexdigest()[:12]
        self._db.execute("INSERT INTO token_keys VALUES (?, ?, ?, ?, 1)",
                         (kid, key.private_bytes_raw().hex(), base64.b64encode(public).decode(), now))
        return kid, key

    def token_public_keys(self, now: float) -> dict[str, Any]:
        """{kid, public_key, keys: {kid: base64 raw public key}} — what machines put in their config."""
        kid, _key = self.token_key(now)
        keys = dict(self._db.execute("SELECT kid, public_b64 FROM token_keys ORDER BY created_at"))
        return {"alg": "Ed25519", "kid": kid, "public_key": keys[kid], "keys": keys}

    def record_token(self, claims: Mapping[str, Any]) -> None:
        """Audit trail of issued tokens (nonce → who, what limit, until when)."""
        self._db.execute("INSERT INTO issued_tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (claims["nonce"], claims["kid"], claims["scope"], claims["cust"], claims["limit"],
                          claims["cur"], claims["iat"], claims["exp"]))

    def revoke_tokens(self, customers: Iterable[str], kids: Iterable[str], reason: str,
                      now: float) -> None:
        with _tx(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO token_revocations VALUES (?, ?, ?, ?)",
                [("customer", c, now, reason) for c in customers] + [("kid", k, now, reason) for k in kids])

    def is_revoked(self, customer: str, kid: str) -> bool:
        row = self._db.execute("SELECT 1 FROM token_revocations WHERE (kind = 'customer' AND value = ?) "
                               "OR (kind = 'kid' AND value = ?)", (customer, kid)).fetchone()
        return row is not None


class _tx:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
