"""House rule: `edge/ledger` is the only code that touches SQLite (ARCHITECTURE.md, issue 15).

Fails on any SQL statement (a string literal starting with a SQL verb) or database call (`execute`,
`fetchone`, ...) in the machine's packages outside `edge/ledger`. `sync/refcloud` is the cloud's own
server with its own store and is not the machine's ledger. The allow-list below is debt, not policy:
each entry says why it is still there; remove it when its SQL has moved into a repository.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "drivers", "vision_models", "hw_sim", "sync")
EXEMPT_PREFIXES = ("edge/ledger/", "sync/refcloud/")
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|REPLACE|WITH)\s", re.S)
DB_CALLS = {"execute", "executemany", "executescript", "execute_fetchall", "fetchone", "fetchall"}

PENDING: dict[str, str] = {
    # issue 15, still to move (path prefix -> why it is still here); empty since edge/demo left for hw_sim/demo
}


def sql_uses(path: pathlib.Path) -> list[int]:
    """Line numbers of SQL literals and database calls in one module."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DB_CALLS
        ):
            lines.append(node.lineno)
    return sorted(lines)


def offenders() -> dict[str, list[int]]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(EXEMPT_PREFIXES) or any(rel.startswith(p) for p in PENDING):
                continue
            if lines := sql_uses(path):
                found[rel] = lines
    return found


def test_no_sql_outside_the_ledger():
    found = offenders()
    assert not found, "SQL outside edge/ledger (move it into a repository there): " + "; ".join(
        f"{f}:{','.join(map(str, ls))}" for f, ls in found.items()
    )


def test_the_check_sees_sql_and_database_calls(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('async def f(db):\n    q = "SELECT 1"\n    await db.fetchone(q)\n    x = "selection"\n')
    assert sql_uses(module) == [2, 3]


def test_every_pending_entry_still_has_sql():
    """An allow-list entry whose SQL has gone must be removed, so the list never hides new SQL."""
    stale = [
        p
        for p in PENDING
        if not any(
            sql_uses(f) for f in ([ROOT / p] if p.endswith(".py") else (ROOT / p).rglob("*.py")) if f.exists()
        )
    ]
    assert not stale, f"remove from PENDING (no SQL left): {stale}"
