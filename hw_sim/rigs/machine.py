"""A whole machine for a scenario: the simulated vend board (pty, in this process) and the real daemon
(subprocess) configured for it, with a technician and a kiosk account logged in over the HTTP API.

Other simulated hardware (Modbus plant, cameras, MDB reader) is started by the caller and handed in
as config sections (`extra`); `ProcessRig.stop` stops the daemon first (it locks the door while the
simulators still answer), then the board, then the caller's `closers`.
"""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from hw_sim.rigs.api import ApiClient, poll
from hw_sim.rigs.config import free_port, spiral_stock, write_config, write_secrets
from hw_sim.rigs.daemon import DaemonProcess, add_user
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import load_demo_planogram

TECH, KIOSK = "tech", "kiosk"
log = structlog.get_logger(__name__)


@dataclass
class ProcessRig:
    root: pathlib.Path
    board: SimVendBoard
    daemon: DaemonProcess
    base_url: str
    tech: ApiClient  # the technician (restock, count, unlock, clear lockout, audit)
    kiosk: ApiClient  # the machine's touchscreen app (customers' sales)
    passwords: dict[str, str]
    planogram: dict[str, Any]
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @property
    def cfg(self) -> pathlib.Path:
        return self.daemon.cfg

    async def stop(self) -> int | None:
        """Daemon (SIGTERM: door locked, drained), then the simulators; the daemon's exit code."""
        for client in (self.tech, self.kiosk):
            await client.close()
        code = await self.daemon.stop()
        if code:  # SIGTERM must end in a clean stop (door locked, journal flushed): say so when it did not
            log.warning("daemon_exit_nonzero", code=code, log_tail=self.daemon.log_tail(10))
        await self.board.stop()
        for close in reversed(self.closers):
            await close()
        return code


async def start_machine(state_dir: str | pathlib.Path, *, speed: float = 20.0, seed: int = 1, extra: str = "",
                        web_port: int = 0, log_path: pathlib.Path | None = None, log_level: str = "warning",
                        fill: str = "spirals", secrets_extra: dict[str, str] | None = None,
                        closers: Sequence[Callable[[], Awaitable[Any]]] = ()) -> ProcessRig:
    """Board on a pty, daemon on the other end, accounts made with the CLI and logged in; `fill`:
    "spirals" (every spiral full, shelves empty), "all" (every slot full) or "none"."""
    root = pathlib.Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    planogram = load_demo_planogram()
    board = SimVendBoard(spiral_stock(planogram), speed=speed, seed=seed)
    rig: ProcessRig | None = None
    try:
        link = await board.serve_pty(str(root / "ttyVEND"))
        metrics_token = secrets.token_hex(16)
        secrets_file = write_secrets(root, metrics_token=metrics_token, **(secrets_extra or {}))
        port = web_port or free_port()
        cfg = write_config(root, board_port=link, extra=extra, web_port=port, secrets_file=str(secrets_file),
                           log_level=log_level, log_format="json")
        passwords = {TECH: secrets.token_urlsafe(12), KIOSK: secrets.token_urlsafe(12)}
        await add_user(cfg, TECH, "technician", passwords[TECH])
        await add_user(cfg, KIOSK, "kiosk", passwords[KIOSK])
        base = f"http://127.0.0.1:{port}"
        daemon = DaemonProcess(cfg, log_path or root / "daemon.log")
        await daemon.start(f"{base}/healthz")
        rig = ProcessRig(root, board, daemon, base, ApiClient(base, metrics_token=metrics_token), ApiClient(base),
                         passwords, planogram, list(closers))
        await rig.tech.login(TECH, passwords[TECH])
        await rig.kiosk.login(KIOSK, passwords[KIOSK])
        await wait_board_online(rig.tech)
        await _fill(rig, fill)
        return rig
    except BaseException:
        if rig is not None:
            await rig.stop()
        else:
            await board.stop()
            for close in reversed(closers):
                await close()
        raise


async def wait_board_online(api: ApiClient, timeout_s: float = 15.0) -> None:
    """Until the daemon reports the vend board connected (its handshake done)."""
    async def online() -> bool:
        devices = (await api.status())["devices"]
        return any(d["name"] == "vend_board" and d["online"] for d in devices)

    await poll(online, timeout_s, what="vend board online")


async def _fill(rig: ProcessRig, fill: str) -> None:
    if fill == "none":
        return
    await rig.tech.restock(None)  # every slot to capacity
    if fill == "spirals":  # no fridge in this machine: its shelf lanes hold nothing
        for slot in [s["slot_id"] for s in rig.planogram["slots"] if s.get("shelf") is not None]:
            await rig.tech.restock(slot, 0)
