"""The gallery: one prototype embedding per label, and enrollment of new SKUs without retraining.

A prototype is the L2-normalized mean of the embeddings of a few reference crops. Classifying a
crop is cosine similarity against every prototype, so adding a product is adding one row here.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

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
    """Labels and their prototypes. Thread-safe: readers get a consistent (labels, matrix) pair."""

    def __init__(self, labels: list[str], prototypes: np.ndarray) -> None:
        if prototypes.ndim != 2 or len(labels) != prototypes.shape[0] or len(set(labels)) != len(labels):
            raise ModelError(f"gallery has {len(labels)} labels for prototypes of shape {prototypes.shape}")
        if not np.all(np.isfinite(prototypes)):
            raise ModelError("gallery prototypes contain NaN/inf")
        self._lock = threading.Lock()
        self._state = (tuple(labels), np.ascontiguousarray(prototypes, np.float32))

    @property
    def dim(self) -> int:
        return int(self._state[1].shape[1])

    def snapshot(self) -> tuple[tuple[str, ...], np.ndarray]:
        """The current (labels, prototypes) pair; never half-updated."""
        return self._state

    def put(self, label: str, proto: np.ndarray) -> None:
        """Add or replace the prototype of `label`."""
        if proto.shape != (self.dim,):
            raise ValueError(f"prototype must have shape ({self.dim},), got {proto.shape}")
        with self._lock:
            labels, mat = self._state
            if label in labels:
                mat = mat.copy()
                mat[labels.index(label)] = proto
            else:
                labels = (*labels, label)
                mat = np.vstack([mat, proto[None, :].astype(np.float32)])
            self._state = (labels, mat)

    def remove(self, label: str) -> bool:
        """Drop the prototype of `label`; False if it had none."""
        with self._lock:
            labels, mat = self._state
            if label not in labels:
                return False
            i = labels.index(label)
            self._state = (labels[:i] + labels[i + 1:], np.delete(mat, i, axis=0))
            return True

    def copy(self) -> Gallery:
        labels, mat = self._state
        return Gallery(list(labels), mat.copy())

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        """Read a gallery .npz (arrays `labels`, `prototypes`); ModelError if missing or corrupt."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                labels = [str(x) for x in z["labels"]]
                protos = np.asarray(z["prototypes"], np.float32)
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ModelError(f"cannot read gallery {path}: {exc}") from exc
        return cls(labels, protos)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a gallery."""
        labels, mat = self._state
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gallery-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, labels=np.array(labels, dtype=str), prototypes=mat)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the gallery is not a secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
