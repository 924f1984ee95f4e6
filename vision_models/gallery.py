"""The gallery as operator state: a versioned file in the state directory, the shipped one a seed.

    store = GalleryStore(state_dir / "vision", seed=DEFAULT_MODEL_DIR / "gallery.npz")
    gallery, version = store.load()          # the seed (version 0) until the first save
    rec = Recognizer.load(model_dir, gallery=gallery)
    rec.enroll("kombucha", images); store.save(rec.gallery)   # -> version 1, seed untouched

Layout: `gallery.npz` (current) and `gallery.prev.npz` (the version before), each holding
`labels`, `prototypes`, `radius`, the pair check's `spread_labels` / `spread_mean` / `spread_dirs` /
`spread_step` / `spread_scale` (only
when some product has one), `version` and `model` (the id of the model that embedded them: prototypes
from another model are meaningless, see `load_for`). A save writes a temp file, fsyncs it, moves the current file to
`.prev`, then renames the temp file into place: a crash at any point leaves a loadable current or
previous version, and `load` falls back to the previous one when the current is missing or corrupt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from vision_models.enroll import Gallery
from vision_models.types import EMPTY, ModelError

log = structlog.get_logger(__name__)

CURRENT, PREVIOUS = "gallery.npz", "gallery.prev.npz"


def missing_prototypes(planogram_skus: Iterable[str], gallery_labels: Iterable[str]) -> list[str]:
    """The planogram SKUs the gallery cannot name (sorted, no duplicates): their lanes must go
    weight-only or to review, and one alarm should list them."""
    have = set(gallery_labels)
    return sorted({s for s in planogram_skus if s and s != EMPTY and s not in have})


def _read(path: Path) -> tuple[Gallery, int, str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            gallery = Gallery.from_npz(z)
            version = int(z["version"]) if "version" in z.files else 0
            model = str(z["model"]) if "model" in z.files else ""
    except (OSError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise ModelError(f"cannot read gallery {path}: {exc}") from exc
    return gallery, version, model


class GalleryStore:
    """A versioned gallery in `directory`, seeded from the shipped `seed` gallery."""

    def __init__(self, directory: str | Path, *, seed: str | Path) -> None:
        self.dir = Path(directory)
        self.seed = Path(seed)
        self._lock = threading.Lock()

    def load(self) -> tuple[Gallery, int]:
        """(gallery, version): current, else the previous version, else the seed (version 0).

        ModelError only when none of them can be read."""
        gallery, version, _ = self.load_tagged()
        return gallery, version

    def load_tagged(self) -> tuple[Gallery, int, str]:
        """(gallery, version, model id); the seed's model id is "" (it ships with its model)."""
        for name in (CURRENT, PREVIOUS):
            path = self.dir / name
            if not path.exists():
                continue
            try:
                return _read(path)
            except ModelError as exc:
                log.error("gallery_unreadable", path=str(path), error=str(exc))
        gallery, _, _ = _read(self.seed)
        return gallery, 0, ""

    def version(self) -> int:
        """The version `load` would return (0 = the seed)."""
        return self.load()[1]

    def stamp(self) -> tuple[int, int]:
        """A cheap change marker of the current file (mtime_ns, size); (0, 0) when there is none."""
        try:
            st = (self.dir / CURRENT).stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive between threads and processes (the daemon and `vendedge product`)."""
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def update(self, change: Callable[[Gallery], None], *, model: str = "") -> tuple[Gallery, int]:
        """Load the newest version, apply `change` to it, save it as the next version (all under
        the lock, so two writers never lose each other's enrollments); returns (gallery, version)."""
        with self.locked():
            gallery, _ = self.load()
            change(gallery)
            return gallery, self._save(gallery, model)

    def save(self, gallery: Gallery, *, model: str = "") -> int:
        """Write `gallery` as the next version, keeping the one before; returns the new version."""
        with self.locked():
            return self._save(gallery, model)

    def _save(self, gallery: Gallery, model: str) -> int:
        version = self.version() + 1
        labels, _ = gallery.snapshot()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".gallery-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                arrays: dict[str, Any] = {**gallery.arrays(), "version": np.array(version), "model": np.array(model)}
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            cur = self.dir / CURRENT
            if cur.exists():
                os.replace(cur, self.dir / PREVIOUS)
            os.replace(tmp, cur)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("gallery_saved", dir=str(self.dir), version=version, labels=len(labels))
        return version
