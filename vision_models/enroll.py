"""The gallery: one prototype embedding per label, and enrollment of new SKUs without retraining.

A prototype is the L2-normalized mean of the embeddings of a few reference crops (and their
enrollment views, `vision_models.augment`). Classifying a crop is cosine similarity against every
prototype, so adding a product is adding one row here. Each row may also carry a *radius*: how
similar the SKU's own references are to its prototype (leave-one-reference-out, see
`Recognizer.reference`); NaN when unknown (the shipped seed labels); and the *spread* of its
enrollment views (mean and main directions, `vision_models.pairs`) for the pair check between look-alikes;
None when unknown (the shipped seed labels, products enrolled before it existed).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vision_models.pairs import Spread, quantized
from vision_models.types import ModelError


class Reference(NamedTuple):
    """What a product's reference images give the gallery (`Recognizer.reference`; `Gallery.put(label, *ref)`)."""

    proto: np.ndarray
    radius: float
    spread: Spread


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

    def __init__(self, labels: list[str], prototypes: np.ndarray, radius: np.ndarray | None = None,
                 spreads: dict[str, Spread] | None = None) -> None:
        if prototypes.ndim != 2 or len(labels) != prototypes.shape[0] or len(set(labels)) != len(labels):
            raise ModelError(f"gallery has {len(labels)} labels for prototypes of shape {prototypes.shape}")
        if not np.all(np.isfinite(prototypes)):
            raise ModelError("gallery prototypes contain NaN/inf")
        rad = np.full(len(labels), np.nan, np.float32) if radius is None else np.asarray(radius, np.float32)
        if rad.shape != (len(labels),):
            raise ModelError(f"gallery has {len(labels)} labels for radii of shape {rad.shape}")
        spreads = {k: _stored(v) for k, v in (spreads or {}).items()}
        dims = {_spread_dim(v) for v in spreads.values()}
        if not set(spreads) <= set(labels) or None in dims or len(dims) > 1:
            raise ModelError("gallery spreads do not match its labels or one dimension")
        self._lock = threading.Lock()
        self._state = (tuple(labels), np.ascontiguousarray(prototypes, np.float32), rad)
        self._spreads = spreads  # replaced, never mutated: readers may hold the old dict

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

    def spread(self, label: str) -> Spread | None:
        """`label`'s enrollment spread (mean, main directions), None when it has none."""
        return self._spreads.get(label)

    def put(self, label: str, proto: np.ndarray, radius: float = float("nan"), spread: Spread | None = None) -> None:
        """Add or replace the prototype (and radius, and spread: None drops an old one) of `label`."""
        if proto.shape != (self.dim,):
            raise ValueError(f"prototype must have shape ({self.dim},), got {proto.shape}")
        spread = None if spread is None else _stored(spread)
        dim = None if spread is None else _spread_dim(spread)
        if spread is not None and dim is None:
            raise ValueError("spread must be (mean (D,), directions (K, D)), finite, with a positive scale or none")
        with self._lock:
            others = {k: v for k, v in self._spreads.items() if k != label}
            have = next((int(v[0].shape[0]) for v in others.values()), None)
            if dim is not None and have not in (None, dim):
                raise ValueError(f"spread has dimension {dim}, the gallery's others {have}")
            spreads = others
            if spread is not None:
                spreads[label] = spread
            self._spreads = spreads
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
            self._spreads = {k: v for k, v in self._spreads.items() if k != label}
            return True

    def copy(self) -> Gallery:
        labels, mat, rad = self._state
        return Gallery(list(labels), mat.copy(), rad.copy(), self._spreads)

    def arrays(self) -> dict[str, np.ndarray]:
        """What a gallery file holds (np.savez keyword arguments); the spread arrays only when a label
        has one (`spread_labels`, `spread_mean`, `spread_dirs` int8, `spread_step`, `spread_scale`)."""
        labels, mat, rad = self._state
        out = {"labels": np.array(labels, dtype=str), "prototypes": mat, "radius": rad}
        spreads = self._spreads
        if spreads:
            names = [lb for lb in labels if lb in spreads]
            out["spread_labels"] = np.array(names, dtype=str)
            out["spread_mean"] = np.stack([spreads[n][0] for n in names]).astype(np.float32)
            out["spread_dirs"] = np.stack([spreads[n].dirs for n in names]).astype(np.int8)
            out["spread_step"] = np.stack([np.asarray(spreads[n].step) for n in names]).astype(np.float32)
            out["spread_scale"] = np.array([spreads[n].scale for n in names], np.float32)
        return out

    @classmethod
    def from_npz(cls, z: Any) -> Gallery:
        """From an open np.load of a gallery file (`radius` and the spread arrays optional: older files
        have none)."""
        labels = [str(x) for x in z["labels"]]
        radius = np.asarray(z["radius"], np.float32) if "radius" in z.files else None
        spreads: dict[str, Spread] = {}
        if "spread_labels" in z.files:
            means, dirs = np.asarray(z["spread_mean"]), np.asarray(z["spread_dirs"])
            names = [str(x) for x in z["spread_labels"]]
            scales = (np.asarray(z["spread_scale"], np.float64) if "spread_scale" in z.files
                      else np.full(len(names), np.nan))  # written before the open-set check had one
            # int8 directions with a step per row since 2.5.1; float16 before (quantized on load)
            steps = np.asarray(z["spread_step"], np.float32) if "spread_step" in z.files else None
            if dirs.dtype == np.int8 and (steps is None or steps.shape != dirs.shape[:2]):
                raise ModelError(f"gallery has int8 spread directions {dirs.shape} without their steps")
            if means.shape[0] != len(names) or dirs.shape[0] != len(names) or scales.shape != (len(names),):
                raise ModelError(f"gallery has {len(names)} spread labels for arrays {means.shape}, {dirs.shape}")
            spreads = {n: Spread(means[i], dirs[i], float(scales[i]), None if steps is None else steps[i])
                       for i, n in enumerate(names)}
        return cls(labels, np.asarray(z["prototypes"], np.float32), radius, spreads)

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
                arrays: dict[str, Any] = self.arrays()  # typed loosely: savez's own keywords are not arrays
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the gallery is not a secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _stored(spread: Spread | tuple[np.ndarray, ...]) -> Spread:
    """As the gallery keeps it: float32 mean, int8 directions with a step per row (`pairs.quantized`),
    a float scale (NaN when not given)."""
    return quantized(spread)


def _spread_dim(spread: Spread) -> int | None:
    """D of a well-formed spread (mean (D,), int8 directions (K, D) with K steps, all finite; scale
    NaN or finite and positive: an infinite one would make every read look close), else None. D is the model's
    pair-feature dimension, not necessarily the embedding's (`vision_models.recognizer`)."""
    mean, dirs, scale, step = spread
    ok = (np.ndim(mean) == 1 and np.shape(mean)[0] > 0 and np.ndim(dirs) == 2 and np.shape(dirs)[1] == np.shape(mean)[0]
          and np.asarray(dirs).dtype == np.int8 and step is not None and np.shape(step) == np.shape(dirs)[:1]
          and bool(np.all(np.isfinite(mean))) and bool(np.all(np.isfinite(step)))
          and (np.isnan(scale) or 0 < scale < np.inf))
    return int(np.shape(mean)[0]) if ok else None
