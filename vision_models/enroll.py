"""The gallery: one prototype embedding per label, and enrollment of new SKUs without retraining.

A prototype is the L2-normalized mean of the embeddings of a few reference crops (and their
enrollment views, `vision_models.augment`). Classifying a crop is cosine similarity against every
prototype, so adding a product is adding one row here. Each row may also carry a *radius*: how
similar the SKU's own references are to its prototype (leave-one-reference-out, see
`Recognizer.reference`); NaN when unknown (the shipped seed labels).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vision_models.types import ModelError


def prototype(embeddings: np.ndarray) -> np.ndarray:
    """L2-normalized mean of L2-normalized embeddings (N x D) -> (D,)."""
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"need at least one embedding, got shape {embeddings.shape}")
    mean = embeddings.astype(np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError("reference embeddings cancel out; give clearer reference images")
    out: np.ndarray = mean / norm
    return out


class Gallery:
    """Labels, their prototypes and radii. Thread-safe: readers get a consistent snapshot."""

    def __init__(self, labels: list[str], prototypes: np.ndarray, radius: np.ndarray | None = None) -> None:
        if prototypes.ndim != 2 or len(labels) != prototypes.shape[0] or len(set(labels)) != len(labels):
            raise ModelError(f"gallery has {len(labels)} labels for prototypes of shape {prototypes.shape}")
        if not np.all(np.isfinite(prototypes)):
            raise ModelError("gallery prototypes contain NaN/inf")
        rad = np.full(len(labels), np.nan, np.float32) if radius is None else np.asarray(radius, np.float32)
        if rad.shape != (len(labels),):
            raise ModelError(f"gallery has {len(labels)} labels for radii of shape {rad.shape}")
        self._lock = threading.Lock()
        self._state = (tuple(labels), np.ascontiguousarray(prototypes, np.float32), rad)

    @property
    def dim(self) -> int:
        return int(self._state[1].shape[1])

    def snapshot(self) -> tuple[tuple[str, ...], np.ndarray]:
        """The current (labels, prototypes) pair; never half-updated."""
        labels, mat, _ = self._state
        return labels, mat

    def entries(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(labels, prototypes, radii), one consistent snapshot; a radius is NaN when unknown."""
        return self._state

    def put(self, label: str, proto: np.ndarray, radius: float = float("nan")) -> None:
        """Add or replace the prototype (and radius) of `label`."""
        if proto.shape != (self.dim,):
            raise ValueError(f"prototype must have shape ({self.dim},), got {proto.shape}")
        with self._lock:
            labels, mat, rad = self._state
            if label in labels:
                mat, rad = mat.copy(), rad.copy()
                mat[labels.index(label)] = proto
                rad[labels.index(label)] = radius
            else:
                labels = (*labels, label)
                mat = np.vstack([mat, proto[None, :].astype(np.float32)])
                rad = np.append(rad, np.float32(radius))
            self._state = (labels, mat, rad)

    def remove(self, label: str) -> bool:
        """Drop the prototype of `label`; False if it had none."""
        with self._lock:
            labels, mat, rad = self._state
            if label not in labels:
                return False
            i = labels.index(label)
            self._state = (labels[:i] + labels[i + 1:], np.delete(mat, i, axis=0), np.delete(rad, i))
            return True

    def copy(self) -> Gallery:
        labels, mat, rad = self._state
        return Gallery(list(labels), mat.copy(), rad.copy())

    def arrays(self) -> dict[str, np.ndarray]:
        """What a gallery file holds (np.savez keyword arguments)."""
        labels, mat, rad = self._state
        return {"labels": np.array(labels, dtype=str), "prototypes": mat, "radius": rad}

    @classmethod
    def from_npz(cls, z: Any) -> Gallery:
        """From an open np.load of a gallery file (`radius` optional: older files have none)."""
        labels = [str(x) for x in z["labels"]]
        radius = np.asarray(z["radius"], np.float32) if "radius" in z.files else None
        return cls(labels, np.asarray(z["prototypes"], np.float32), radius)

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        """Read a gallery .npz (arrays `labels`, `prototypes`); ModelError if missing or corrupt."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                return cls.from_npz(z)
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ModelError(f"cannot read gallery {path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a gallery."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gallery-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                a = self.arrays()
                np.savez(fh, labels=a["labels"], prototypes=a["prototypes"], radius=a["radius"])
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the gallery is not a secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
