"""Simulated shelf cameras: the top-down renderer (render.py) and packaging table (appearance.py)."""

from hw_sim.camera.render import ShelfRenderer, render_item

__all__ = ["ShelfRenderer", "render_item"]
