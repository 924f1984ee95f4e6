"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks) that sign every /v1
request as docs/protocols/sync.md says, so fuzzing reaches the handlers behind the signature check.

Signed when VENDEDGE_ST_MACHINE and VENDEDGE_ST_SECRET_HEX are set: the path's machine_id is
pinned to that machine and a requests auth hook signs the *prepared* request (final method,
path-with-query and body bytes), fresh timestamp and nonce each time. Unset → requests go unsigned.
"""

from __future__ import annotations

import os
import time
from typing import Any

import requests
import schemathesis

from sync import signing


class HmacAuth(requests.auth.AuthBase):
    """The four X-* auth headers over the exact bytes requests will send."""

    def __init__(self, machine_id: str, secret: bytes) -> None:
        self.machine_id, self.secret = machine_id, secret

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        r.headers.update(signing.request_headers(self.machine_id, self.secret, r.method or "GET",
                                                 r.path_url, body, now=time.time()))
        return r


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # a valid long-poll holds the request for `wait` seconds: keep the fuzz run fast (0)
    if isinstance(case.query, dict) and str(case.query.get("wait", "")).lstrip("-").isdecimal():
        case.query["wait"] = 0
    machine_id = os.environ.get("VENDEDGE_ST_MACHINE")
    secret_hex = os.environ.get("VENDEDGE_ST_SECRET_HEX")
    if not machine_id or not secret_hex:
        return
    if case.path_parameters is not None and "machine_id" in case.path_parameters:
        case.path_parameters["machine_id"] = machine_id
    kwargs["auth"] = HmacAuth(machine_id, bytes.fromhex(secret_hex))
