"""Reference cloud server for the vendedge sync protocol (aiohttp + SQLite)."""

from sync.refcloud.app import create_app
from sync.refcloud.server import main, serve

__all__ = ["create_app", "main", "serve"]
