"""`vendedge-sim`: the simulated machine on its own — vend board, Modbus plant, shelf cameras —
for testers and for a daemon on another host (`vendedge-sim demo ARGS` runs `vendedge demo ARGS`:
these simulators with the daemon as a subprocess). Faults are typed on stdin, one per line:

    jam A1 | nodrop A1 | garble N | silence N | unplug | replug        (vend board)
    mb-silence UNIT POLLS | mb-garbage UNIT N | compressor on|off      (Modbus plant)
    cam-fail shelf0 dead|frozen|black | cam-heal shelf0 | open | close | take F1 | quit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from hw_sim.camera.render import ShelfRenderer
from hw_sim.camera.server import CameraServer
from hw_sim.modbus import SimModbusPlant
from hw_sim.vend_board import SimVendBoard
from hw_sim.world import FridgeWorld, load_demo_planogram


async def serve(args: argparse.Namespace) -> int:
    root = pathlib.Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    doc = load_demo_planogram()
    world = FridgeWorld(doc)
    board = SimVendBoard({s["slot_id"]: s["capacity"] for s in doc["slots"] if s.get("shelf") is None},
                         speed=args.speed)
    board_at = f"socket://127.0.0.1:{await board.serve_tcp(port=args.board_tcp)}" if args.board_tcp \
        else await board.serve_pty(str(root / "ttyVEND"))
    plant = SimModbusPlant(world, speed=args.speed)
    plant_at = await plant.serve_rtu(str(root / "ttyMODBUS"))
    cams = CameraServer({f"shelf{k}": ShelfRenderer(world, k) for k in world.shelves()}, port=args.camera_port)
    await cams.start()
    print(json.dumps({"vend_board": board_at, "modbus_rtu": plant_at,
                      "cameras": {f"shelf{k}": cams.url(f"shelf{k}") for k in world.shelves()}}), flush=True)
    try:
        await console(board, plant, cams, world)
    finally:
        await cams.stop()
        await plant.close()
        await board.stop()
    return 0


async def console(board: SimVendBoard, plant: SimModbusPlant, cams: CameraServer, world: FridgeWorld) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode():
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        try:
            print(await apply_fault(words, board, plant, cams, world), flush=True)
        except (ValueError, KeyError, IndexError) as exc:
            print(f"error: {exc!r}; see `vendedge-sim --help`", flush=True)


async def apply_fault(words: Sequence[str], board: SimVendBoard, plant: SimModbusPlant, cams: CameraServer,
                      world: FridgeWorld) -> Any:
    cmd, args = words[0], list(words[1:])
    table: dict[str, Any] = {
        "jam": lambda: board.jam(args[0]), "nodrop": lambda: board.no_drop(args[0]),
        "garble": lambda: board.garble(int(args[0])), "silence": lambda: board.silence(int(args[0])),
        "unplug": board.unplug, "replug": board.replug,
        "mb-silence": lambda: plant.silence(int(args[0]), polls=int(args[1])),
        "mb-garbage": lambda: plant.crc_garbage(int(args[0]), int(args[1])),
        "compressor": lambda: plant.fail_compressor(args[0] == "off"),
        "cam-fail": lambda: cams.fail(args[0], args[1] if len(args) > 1 else "dead"),
        "cam-heal": lambda: cams.heal(args[0]), "open": plant.open_door, "close": plant.close_door,
        "take": lambda: world.take(args[0]),
    }
    if cmd not in table:
        raise ValueError(f"unknown command {cmd!r}")
    result = table[cmd]()
    if asyncio.iscoroutine(result):
        result = await result
    return f"ok {cmd} {result if result is not None else ''}".strip()


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["demo"]:  # `vendedge-sim demo ARGS` = `vendedge demo ARGS`
        from hw_sim.demo.__main__ import main as demo_main

        return demo_main(args_in[1:])
    p = argparse.ArgumentParser(prog="vendedge-sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/vendedge-sim", help="where the pty links are created")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--board-tcp", type=int, default=0, help="serve the vend board on TCP instead of a pty")
    p.add_argument("--camera-port", type=int, default=0)
    args = p.parse_args(args_in)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))  # stdout: answers only
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
