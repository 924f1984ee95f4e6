"""Products page: what the shelf cameras can name. Capture references from a lane's camera, upload
package photos, see the gallery with its reference thumbnails and each product's look-alikes (products
the cameras can hardly tell from it, `vision_models.lookalike`), remove a product (technician only,
CSRF- and Origin-checked like every POST). The work is done by edge/services/enrollment.py.

The upload form is the one route allowed a larger body (`UPLOAD_MAX`, see edge/web/app.py); each
image is bounded again by the enrollment service (bytes and pixels, checked before decoding).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.services.enrollment import MAX_IMAGES, EnrollError
from edge.web.auth import redirect, technician
from edge.web.keys import USER_NAME
from edge.web.views import flash, q_of, render

UPLOAD_MAX = MAX_IMAGES * 512 * 1024  # the whole multipart body of one upload


def _service(request: web.Request) -> Any:
    return q_of(request).m.services.enrollment


async def products_page(request: web.Request) -> web.Response:
    page = await q_of(request).products()
    ctx: dict[str, Any] = {"enabled": page is not None, "max_images": MAX_IMAGES, "p": page}
    return render(request, "products.html", ctx)


async def ref_image(request: web.Request) -> web.StreamResponse:
    """GET /products/ref/{sku}/{name}: a kept reference crop; names are checked, never joined raw."""
    svc = _service(request)
    path = svc.gallery.ref_path(request.match_info["sku"], request.match_info["name"]) if svc else None
    if path is None:
        raise web.HTTPNotFound(text="not found")
    return web.FileResponse(path, headers={"Cache-Control": "private, max-age=60"})


async def _do(request: web.Request, what: str, coro: Any, done: Any) -> web.Response:
    try:
        result = await coro
    except EnrollError as exc:
        flash(request, "error", f"{what}: refused ({exc.reason}) {exc.detail}")
        return redirect("/products")
    except Exception as exc:  # a camera error, an unreadable file: shown, not a 500
        flash(request, "error", f"{what}: failed: {exc}")
        return redirect("/products")
    flash(request, "ok", f"{what}: {done(result)}")
    return redirect("/products")


async def _service_and_form(request: web.Request) -> tuple[Any, Any]:
    svc = _service(request)
    if svc is None:
        raise web.HTTPConflict(text="take-and-go is not running on this machine")
    return svc, await request.post()


def _enrolled(r: dict[str, Any]) -> str:
    left = f"; still without a prototype: {', '.join(r['missing'])}" if r["missing"] else ""
    alike = (
        f"; the cameras can hardly tell it from {', '.join(a['sku_id'] for a in r['look_alikes'])}: enroll "
        "both from sharp views of the mark that differs, or keep them on different shelves"
        if r["look_alikes"] else ""
    )
    stuck = [a for a in r["look_alikes"] if a["cannot_part"]]
    if stuck:
        alike += "; " + ", ".join(
            f"{a['sku_id']} shares shelf {', '.join(map(str, a['shared_shelves']))} with it at the same weight"
            for a in stuck
        ) + " (neither camera nor scale can tell which was taken: move one)"
    return f"{r['images']} reference image(s), gallery version {r['gallery_version']}{left}{alike}"


@technician
async def upload_action(request: web.Request) -> web.Response:
    svc, form = await _service_and_form(request)
    sku = str(form.get("sku_id", "")).strip()
    blobs = [f.file.read() for f in form.getall("images", []) if isinstance(f, web.FileField)]
    blobs = [b for b in blobs if b]
    if not blobs:
        flash(request, "error", f"upload {sku}: choose 1-{MAX_IMAGES} PNG or JPEG images")
        return redirect("/products")
    return await _do(
        request,
        f"upload {sku}",
        svc.enroll_encoded(sku, blobs, actor=request[USER_NAME], source="web"),
        _enrolled,
    )


@technician
async def capture_action(request: web.Request) -> web.Response:
    svc, form = await _service_and_form(request)
    sku, slot = str(form.get("sku_id", "")).strip(), str(form.get("slot_id", "")).strip().upper()
    return await _do(
        request, f"capture {sku} from {slot}", svc.capture(sku, slot, actor=request[USER_NAME]), _enrolled
    )


@technician
async def remove_action(request: web.Request) -> web.Response:
    svc, form = await _service_and_form(request)
    sku = str(form.get("sku_id", "")).strip()
    if form.get("confirm") != "yes":
        flash(request, "error", f"remove {sku}: tick the confirmation box")
        return redirect("/products")
    return await _do(
        request,
        f"remove {sku}",
        svc.remove(sku, actor=request[USER_NAME]),
        lambda r: f"gallery version {r['gallery_version']}",
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/products", products_page)
    app.router.add_get("/products/ref/{sku}/{name}", ref_image)
    app.router.add_post("/products/upload", upload_action)
    app.router.add_post("/products/capture", capture_action)
    app.router.add_post("/products/remove", remove_action)
