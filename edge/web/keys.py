"""Typed keys for the app's shared objects and the per-request auth state (aiohttp AppKey/RequestKey)."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from edge.core.accounts import WebSession
from edge.services.queries import Queries
from edge.services.technician import Technician
from edge.web.sse import HUB

__all__ = ["ALLOWED_HOSTS", "FLASH", "HUB", "JINJA", "METRICS_TOKEN", "QUERIES", "SESSION", "STATIC", "STATS",
           "TECHNICIAN", "TOKEN", "USER_NAME"]

QUERIES = web.AppKey("queries", Queries)
TECHNICIAN = web.AppKey("technician", Technician)
ALLOWED_HOSTS = web.AppKey("allowed_hosts", frozenset[str])  # web.allowed_hosts, lower case
FLASH = web.AppKey("flash", dict[str, tuple[str, str]])
METRICS_TOKEN = web.AppKey("metrics_token", str)
STATIC = web.AppKey("static", dict[str, tuple[bytes, str, str]])
STATS = web.AppKey("stats", dict[str, Any])
JINJA = web.AppKey("jinja", jinja2.Environment)

SESSION = web.RequestKey("session", WebSession)
TOKEN = web.RequestKey("session_token", str)
USER_NAME = web.RequestKey("user_name", str)
