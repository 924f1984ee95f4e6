"""`vendedge product enroll|capture|remove|list`: the machine's product gallery from a shell.

Works on the machine's state directory (machine.data_dir of --config) while the daemon runs: the
gallery file is written under a lock shared with the daemon, which picks the new version up within
a second, re-checks the planogram and clears or raises the missing-prototype alarm. `capture` reads
the shelf camera of the lane itself (an IP camera serves two readers; a USB camera held by the
daemon cannot be opened twice: use the Products page there). `enroll`, `capture` and `list` name
each product's look-alikes: enrolled products the cameras can hardly tell from it
(`vision_models.lookalike`), with their separation (larger: easier).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
from typing import Any

from edge.core.errors import ConfigError


def add_parser(sub: Any, config_arg: Any) -> None:
    p = sub.add_parser(
        "product",
        help="products the shelf cameras can name: enroll, capture, remove, list",
        description="Reference images -> the machine's recognizer gallery "
        "(<data_dir>/vision, versioned; the shipped gallery is only the seed).",
    )
    act = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    en = act.add_parser("enroll", help="enroll SKU from 1-12 PNG/JPEG images of the package, framed alone")
    en.add_argument("sku", help="SKU id")
    en.add_argument("images", nargs="+", type=pathlib.Path, metavar="IMAGE")
    config_arg(en)
    cap = act.add_parser(
        "capture", help="enroll SKU from the filled lane SLOT as its shelf camera sees it now"
    )
    cap.add_argument("sku", help="SKU id")
    cap.add_argument("--slot", required=True, help="the lane holding the product, e.g. A1")
    config_arg(cap)
    rm = act.add_parser("remove", help="remove SKU's prototype and reference images")
    rm.add_argument("sku", help="SKU id")
    config_arg(rm)
    ls = act.add_parser("list", help="the gallery and the camera-lane products without a prototype")
    ls.add_argument("--json", action="store_true", help="one JSON document")
    config_arg(ls)


def product_command(args: argparse.Namespace) -> int:
    import structlog

    from drivers.errors import DeviceError
    from edge.services.enrollment import EnrollError
    from vision_models.types import ModelError

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))  # stdout: the answer
    try:
        out = asyncio.run(_run(args))
    except EnrollError as exc:
        print(f"vendedge product: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, DeviceError, ModelError) as exc:
        print(f"vendedge product: {exc}", file=sys.stderr)
        return 1
    if args.action == "list" and not args.json:
        print("\n".join(list_lines(out)))
    else:
        print(json.dumps(out))
    return 0


def list_lines(out: dict[str, Any]) -> list[str]:
    """`product list` as text: a line per product (references, lanes, look-alikes), one per
    camera-lane product without a prototype, the gallery version."""
    lines = []
    for row in out["rows"]:
        alike = "".join(
            f"  looks like {a['sku_id']} ({a['separation']}"
            + (f"; same shelf {','.join(map(str, a['shared_shelves']))}, same weight" if a["cannot_part"] else "")
            + ")"
            for a in row["look_alikes"]
        )
        lines.append(
            f"{row['sku_id']:<24} {len(row['refs']) or 'shipped':>7} refs  lanes {','.join(row['lanes']) or '-'}{alike}"
        )
    lines += [f"MISSING {row['sku_id']:<16} lanes {','.join(row['lanes'])}" for row in out["missing"]]
    return [*lines, f"gallery version {out['version']}"]


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.config import load_config
    from edge.ledger import repo
    from edge.ledger.db import LedgerDB
    from edge.services.enrollment import EnrollError, ProductGallery, decode_image, lane_crops
    from edge.services.lookalike_shelves import camera_skus, on_shelves
    from edge.services.takeandgo_setup import DEFAULT_MODEL
    from vision_models.gallery import missing_prototypes
    from vision_models.recognizer import Recognizer
    from vision_models.types import EMPTY

    cfg = load_config(args.config)
    data_dir = pathlib.Path(cfg.machine.data_dir)
    ledger = data_dir / "ledger.sqlite3"
    if not ledger.is_file():
        raise ConfigError(
            "machine.data_dir", cfg.machine.data_dir, "a directory holding the machine's ledger"
        )
    model_dir = cfg.takeandgo.model_dir or DEFAULT_MODEL
    rec = Recognizer.load(model_dir, threads=1)
    gallery = ProductGallery.for_model(data_dir, rec, model_dir)
    gallery.open()
    db = await LedgerDB.open(str(ledger))
    try:
        planogram = await repo.current_planogram(db)
        if args.action == "list":
            lanes: dict[str, list[str]] = {}
            for slot in sorted(planogram.slots.values(), key=lambda s: s.slot_id) if planogram else ():
                if slot.shelf is not None:
                    lanes.setdefault(slot.sku_id, []).append(slot.slot_id)
            per_shelf = camera_skus(planogram)
            wanted = {s for skus in per_shelf.values() for s in skus}
            return {
                "version": gallery.version,
                "rows": [
                    {"sku_id": s, "refs": gallery.ref_names(s), "lanes": lanes.get(s, []),
                     "look_alikes": on_shelves(planogram, s, gallery.look_alikes(s), per_shelf)}
                    for s in gallery.labels()
                ],
                "missing": [
                    {"sku_id": s, "lanes": lanes.get(s, [])} for s in missing_prototypes(wanted, rec.labels)
                ],
            }
        if args.action == "enroll":
            images = []
            for path in args.images:
                images.append(decode_image(path.read_bytes()))
            version = gallery.enroll(args.sku, images)
            detail: dict[str, Any] = {"sku_id": args.sku, "images": len(images)}
        elif args.action == "capture":
            lane = planogram.slots.get(args.slot) if planogram else None
            if lane is None or lane.shelf is None:
                raise EnrollError("bad_slot", f"{args.slot!r} is not a take-and-go lane")
            image, rois = await _lane_frame(cfg, planogram, lane.shelf)
            rois, crops = lane_crops(image, rois, args.slot)
            dets = rec.recognize(image, rois)
            keep = [c for c, d in zip(crops, dets, strict=True) if d.label != EMPTY]
            if not keep:
                raise EnrollError("lane_empty", f"lane {args.slot} looks empty: fill it and capture again")
            version = gallery.enroll(args.sku, keep)
            detail = {"sku_id": args.sku, "images": len(keep), "slot_id": args.slot}
        else:
            version = gallery.remove(args.sku)
            detail = {"sku_id": args.sku}
        if args.action != "remove":
            detail["look_alikes"] = on_shelves(planogram, args.sku, gallery.look_alikes(args.sku))
        async with db.tx() as tx:
            await tx.event(
                f"product_{'removed' if args.action == 'remove' else 'enrolled'}",
                {**detail, "source": f"cli:{args.action}", "actor": "cli", "gallery_version": version},
            )
        return {**detail, "gallery_version": version}
    finally:
        await db.close()


async def _lane_frame(cfg: Any, planogram: Any, shelf: int) -> tuple[Any, list[Any]]:
    """One picture from the shelf's camera (as configured) and its cell ROIs."""
    from drivers.camera import Camera
    from edge.services.enrollment import EnrollError
    from edge.services.evidence import grid_rois

    for name, cc in cfg.cameras.items():
        if cc.shelf != shelf:
            continue
        source: int | str = int(cc.source) if cc.source.isdigit() else cc.source
        cam = Camera(name, source, width=cc.width, height=cc.height, timeout_s=max(cc.timeout_s, 3.0))
        try:
            frame = await cam.snapshot()
        finally:
            await cam.close()
        slots = [s.slot_id for s in planogram.slots_on_shelf(shelf)]
        return frame.image, grid_rois(slots, cc.x0, cc.y0, cc.cell_w, cc.cell_h, cc.rows)
    raise EnrollError("no_camera", f"shelf {shelf} has no camera in the config")
