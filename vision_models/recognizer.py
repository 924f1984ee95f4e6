"""Shelf-cell recognizer: a small CNN embeds each cell crop; cosine similarity to per-label
prototypes (the gallery) names it. One onnxruntime run per frame, CPU only (plus one more for the
few cells that get a second look).

The daemon calls `recognize` in its bounded executor (it blocks for a few milliseconds).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog

from vision_models.augment import ENROLLMENT_RECIPE, enrollment_views, quarter_turns
from vision_models.enroll import Gallery, Reference, prototype
from vision_models.pairs import pair_verdict, spread_distance, spread_stats
from vision_models.preprocess import crop_cells, resize_square, to_tensor
from vision_models.types import EMPTY, CellDetection, CellRoi, ModelError

log = structlog.get_logger(__name__)

MODEL_FILE, CARD_FILE, GALLERY_FILE = "model.onnx", "model_card.json", "gallery.npz"
FEATURES_OUTPUT = "features"  # the model's optional second output: what the pair check compares
LEAD_LOG_CLIP = 3.0  # |log(runner-up ratio / label's)| counted in a read's lead at most (a factor of e^3 ~ 20)
MAX_RUN_BATCH = 8  # crops per onnxruntime run: the arena keeps the largest; 16 cost 10 MB more RSS, 8 ~3 % more time
DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "shelf-v2"
_REQUIRED = ("name", "version", "input", "normalization", "labels", "embedding_dim", "similarity_scale")


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model card {path}: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"model card {path} is not a JSON object")
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelError(f"model card {path} lacks {missing}")
    norm, inp = card["normalization"], card["input"]
    try:
        ok = (int(inp["size"]) > 0 and len(norm["mean"]) == 3 and len(norm["std"]) == 3
              and all(float(s) > 0 for s in norm["std"]) and float(card["similarity_scale"]) > 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model card {path}: bad input/normalization: {exc}") from exc
    if not ok:
        raise ModelError(f"model card {path}: bad input size, normalization or similarity_scale")
    return card


def _open_session(path: Path, card: dict[str, Any], threads: int) -> ort.InferenceSession:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from exc
    want = card.get("onnx", {}).get("sha256")
    if want and hashlib.sha256(blob).hexdigest() != want:
        raise ModelError(f"model {path} does not match the sha256 in its card (corrupt or swapped)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises bare pybind classes (InvalidProtobuf, Fail, ...)
        raise ModelError(f"onnxruntime cannot load {path}: {type(exc).__name__}: {exc}") from exc


class Recognizer:
    """Names what lies in each shelf cell. Build with `Recognizer.load(model_dir)`."""

    def __init__(self, session: ort.InferenceSession, card: dict[str, Any], gallery: Gallery) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        # the pair check compares look-alikes in the backbone's pooled features when the model has
        # them (`vision_models.train.backbones`), else in the embedding
        outputs = [o.name for o in session.get_outputs()]
        self._outputs = [outputs[0], *(o for o in outputs[1:] if o == FEATURES_OUTPUT)]
        self.card = card
        self.size = int(card["input"]["size"])
        self.scale = float(card["similarity_scale"])
        self._gallery = gallery
        doubt = card.get("doubt", {})
        self.min_quality = float(doubt.get("min_quality", 0.85))
        self.min_margin = float(doubt.get("min_margin", 0.0))
        # per-SKU doubt: a read more than `radius_slack` below its SKU's radius is doubtful (None: off)
        slack = doubt.get("radius_slack")
        self.radius_slack: float | None = None if slack is None else float(slack)
        # the open-set check in pair features: a read further than this from its label's enrollment
        # views, in units of their own distance (`pairs.spread_distance`), is doubtful (None: off)
        ratio = doubt.get("max_spread_ratio")
        self.max_spread_ratio: float | None = None if ratio is None else max(float(ratio), 1.001)
        # the open-set check judges ratio x exp(-gain x margin): a read much nearer its label than any
        # other product may lie further from the label's views (a nearest-neighbour ratio test; 0: off)
        self.ratio_margin_gain = float(doubt.get("ratio_margin_gain", 0.0))
        # a read whose margin is below this gets a second look (quarter turns averaged; 0 = never)
        self.second_look_below = float(doubt.get("second_look_below", 0.0))
        self.second_look_zoom = float(doubt.get("second_look_zoom", 1.0))  # of its 90/270 degree views
        # the pair check between the two nearest products of a read given a second look (`pairs`): its
        # ridge (None: off), and from which |z| on it settles a read the margin leaves in doubt
        shrink = doubt.get("pair_shrink")
        self.pair_shrink: float | None = None if shrink is None else float(shrink)
        self.min_pair_z = float(doubt.get("min_pair_z", float("inf")))
        # a pair the check puts closer together than this (`pairs.separation`: their own views, in units
        # of their spread) gets no verdict (|z| 0): its reads are doubted unless their lead settles them
        self.min_pair_separation = float(doubt.get("min_pair_separation", 0.0))
        # how much the log of the runner-up's spread ratio over the label's adds to a read's lead (0: none)
        self.ratio_weight = float(doubt.get("ratio_weight", 0.0))
        self.second_looks = 0  # cells given a second look since load (a statistic)
        self.pair_dim = int(card["embedding_dim"])  # what the pair check compares (set by `load`'s warm-up)

    @classmethod
    def load(cls, model_dir: str | Path, *, threads: int = 1, gallery: Gallery | None = None) -> Recognizer:
        """Read model.onnx + model_card.json + gallery.npz and run one warm-up inference.

        `gallery` (e.g. from `vision_models.gallery.GalleryStore.load()`) replaces the shipped one.

        Raises ModelError when any file is missing or corrupt or they disagree with each other.
        """
        d = Path(model_dir)
        card = _read_card(d / CARD_FILE)
        session = _open_session(d / MODEL_FILE, card, threads)
        if gallery is None:
            gallery = Gallery.load(d / GALLERY_FILE)
        if gallery.dim != int(card["embedding_dim"]):
            raise ModelError(f"gallery dim {gallery.dim} != card embedding_dim {card['embedding_dim']}")
        rec = cls(session, card, gallery)
        t0 = time.perf_counter()
        probe, feats = rec._run(np.zeros((2, rec.size, rec.size, 3), np.uint8))
        if probe.shape != (2, gallery.dim) or not np.all(np.isfinite(probe)) or not np.all(np.isfinite(feats)):
            raise ModelError(f"warm-up inference gave shape {probe.shape}, expected (2, {gallery.dim})")
        rec.pair_dim = int(feats.shape[1])
        log.info("recognizer_loaded", model=card["name"], version=card["version"], labels=len(rec.labels),
                 threads=threads, warmup_ms=round((time.perf_counter() - t0) * 1000, 1))
        return rec

    @property
    def gallery(self) -> Gallery:
        """The live gallery (enrollments included), e.g. for `GalleryStore.save`."""
        return self._gallery

    def use_gallery(self, gallery: Gallery) -> None:
        """Swap in another gallery (e.g. a newer version from the state directory) at once."""
        if gallery.dim != self._gallery.dim:
            raise ModelError(f"gallery dim {gallery.dim} != model embedding_dim {self._gallery.dim}")
        self._gallery = gallery

    @property
    def model_id(self) -> str:
        """What a stored gallery was embedded with, the model and the enrollment views: prototypes from
        another model, or averaged over other views than the card's doubt was calibrated for, are redone."""
        model = str(self.card.get("onnx", {}).get("sha256") or f"{self.card['name']}-{self.card['version']}")
        return f"{model}+{ENROLLMENT_RECIPE}"

    @property
    def labels(self) -> list[str]:
        """The gallery labels (sku ids plus "empty"), including enrolled ones."""
        return list(self._gallery.snapshot()[0])

    def _embed_batch(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalized embeddings of `crops` (uint8 N x S x S x 3)."""
        return self._run(crops)[0]

    def _run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, pair features), each L2-normalized; the features are the embeddings when the
        model has no `features` output. One onnxruntime run per `MAX_RUN_BATCH` crops: the arena
        onnxruntime keeps grows with the largest batch it has seen (a shelf's 30 cells, and a second
        look's 3 per doubtful cell)."""
        try:
            runs = [self._session.run(self._outputs, {self._input: to_tensor(crops[i:i + MAX_RUN_BATCH],
                                                                             self.card["normalization"])})
                    for i in range(0, max(1, len(crops)), MAX_RUN_BATCH)]
        except Exception as exc:  # onnxruntime's pybind errors have no common base but Exception
            raise ModelError(f"inference failed: {type(exc).__name__}: {exc}") from exc
        emb, feats = (_unit(np.concatenate([r[k] for r in runs])) for k in (0, len(self._outputs) - 1))
        return emb, feats

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized embeddings (N x D) of BGR images framed like a cell's square centre crop."""
        if not images:
            return np.zeros((0, self._gallery.dim), np.float32)
        return self._embed_batch(np.stack([resize_square(im, self.size) for im in images]))

    def pair_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized pair-check features (N x `pair_dim`) of images framed like `embed`'s: the
        model's `features` output, or its embeddings when it has none."""
        if not images:
            return np.zeros((0, self.pair_dim), np.float32)
        return self._run(np.stack([resize_square(im, self.size) for im in images]))[1]

    def recognize(self, frame: np.ndarray, rois: Sequence[CellRoi],
                  candidates: Collection[str] | None = None) -> list[CellDetection]:
        """Best label and runner-up for every ROI of one frame (one batched inference, plus one for
        the cells whose margin is below `second_look_below`: their crop turned three more times).
        `candidates`: the only products a cell can be named (and "empty"), e.g. those the planogram
        stocks; None: every gallery label."""
        if not rois:
            return []
        crops = crop_cells(frame, rois, self.size)
        emb, feats = self._run(crops)
        labels, protos, radius = self._entries(candidates)
        cosine = emb @ protos.T
        two = len(labels) > 1
        look = np.zeros(0, np.int64)
        if two and self.second_look_below > 0:
            top = -np.partition(-cosine, 1, axis=1)[:, :2]
            look = np.flatnonzero(top[:, 0] - top[:, 1] < self.second_look_below)
            if look.size:
                self.second_looks += int(look.size)
                more, more_feats = self._run(quarter_turns(crops[look], self.second_look_zoom))
                emb[look] = _unit(emb[look] + more.reshape(3, look.size, -1).sum(axis=0))
                feats[look] = _unit(feats[look] + more_feats.reshape(3, look.size, -1).sum(axis=0))
                cosine[look] = emb[look] @ protos.T
        logits = cosine * self.scale
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        top2 = np.argsort(-prob, axis=1)[:, :2]
        pair, apart = self._pair_check(look, feats, top2, labels)  # may swap a row of top2
        best = cosine[np.arange(len(rois)), top2[:, 0]]
        ratio = self._spread_ratio(top2[:, 0], feats, labels)
        margin = best - cosine[np.arange(len(rois)), top2[:, 1]] if two else np.ones(len(rois))
        quality = self._quality(best, radius[top2[:, 0]], ratio * np.exp(-self.ratio_margin_gain * np.maximum(margin, 0)))
        weighed = two and self.ratio_weight > 0  # the runner-up's ratio costs ~0.3 ms a read: only when used
        rival = self._spread_ratio(top2[:, 1], feats, labels) if weighed else np.full(len(rois), np.nan)
        lead = margin + self.ratio_weight * rival_log_ratio(ratio, rival)
        out = []
        for roi, (a, b), p, cos, q, z, r, rr, m, ld, sep in zip(rois, top2, prob, cosine, quality, pair, ratio, rival,
                                                               margin, lead, apart, strict=True):
            out.append(CellDetection(roi.slot_id, roi.position, labels[a], float(p[a]),
                                     labels[b] if two else EMPTY, float(p[b]) if two else 0.0,
                                     round(float(cos[a]), 4), round(float(m), 4), round(float(q), 4), round(float(z), 3),
                                     _measured(r), _measured(rr), round(float(ld), 4), round(float(sep), 3)))
        return out

    def _entries(self, candidates: Collection[str] | None) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """The gallery's (labels, prototypes, radii), narrowed to `candidates` and "empty"."""
        labels, protos, radius = self._gallery.entries()
        if candidates is None:
            return labels, protos, radius
        keep = [i for i, label in enumerate(labels) if label == EMPTY or label in candidates]
        if len(keep) < 2:  # nothing to choose between: name cells as without candidates
            return labels, protos, radius
        return tuple(labels[i] for i in keep), protos[keep], radius[keep]

    def _spread_ratio(self, best: np.ndarray, feats: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Each read's `pairs.spread_distance` from its label's enrollment views over their own (the
        label's `scale`): about 1 for a view like the references, large for another package. NaN for
        labels without a spread or scale (the shipped seed, "empty")."""
        out = np.full(len(best), np.nan)
        for k in np.unique(best):
            sp = self._gallery.spread(labels[k])
            if sp is None or not sp.scale > 0 or sp.mean.shape != feats.shape[1:]:
                continue
            rows = np.flatnonzero(best == k)
            out[rows] = spread_distance(sp, feats[rows]) / sp.scale
        return out

    def _pair_check(self, rows: np.ndarray, feats: np.ndarray, top2: np.ndarray,
                    labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(|z|, separation) of the pair check for `rows` (reads given a second look) whose two nearest
        products both have a spread (of this model's pair features: a gallery's spreads from a model
        without them are ignored); a row of `top2` is swapped where the check prefers the runner-up.
        |z| is 0 (no verdict) for a pair separated less than `min_pair_separation`. Both 0 elsewhere."""
        z, apart = np.zeros(len(feats)), np.zeros(len(feats))
        if self.pair_shrink is None or top2.shape[1] < 2:
            return z, apart
        for i in rows:
            a, b = top2[i]
            sa, sb = self._gallery.spread(labels[a]), self._gallery.spread(labels[b])
            if sa is None or sb is None or sa[0].shape != feats[i].shape or sb[0].shape != feats[i].shape:
                continue
            zi, apart[i] = pair_verdict(sa, sb, feats[i], self.pair_shrink)
            if zi < 0:
                top2[i] = (b, a)
            z[i] = abs(zi) if apart[i] >= self.min_pair_separation else 0.0
        return z, apart

    def _quality(self, similarity: np.ndarray, radius: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        """The read judged against its label's own references, as a number that is `min_quality` at
        the card's limit. With `max_spread_ratio` (cards since 2.5.0) and a spread ratio (`ratio`, the
        spread ratio discounted by the margin when the card has `ratio_margin_gain`): 1 up to a ratio
        of 1 (as close as the references themselves), `min_quality` at `max_spread_ratio`, linearly in
        between and on beyond. Else with `radius_slack`: a read exactly `radius_slack` below the label's
        radius maps to `min_quality`, a perfect match to 1. Else (the shipped seed labels, old cards):
        the plain similarity."""
        out = similarity
        if self.radius_slack is not None:
            floor = radius - self.radius_slack
            known = np.isfinite(floor) & (floor < 1)
            scaled = 1 - (1 - similarity) * (1 - self.min_quality) / np.where(known, 1 - floor, 1.0)
            out = np.where(known, scaled, out)
        if self.max_spread_ratio is not None:
            known = np.isfinite(ratio)
            over = np.maximum(np.where(known, ratio, 1.0) - 1, 0) / (self.max_spread_ratio - 1)
            out = np.where(known, 1 - (1 - self.min_quality) * over, out)
        clipped: np.ndarray = np.clip(out, 0.0, 1.0)
        return clipped

    def reference(self, images: Sequence[np.ndarray]) -> Reference:
        """(prototype, radius, spread) of a SKU from a few reference images (BGR, framed like a cell's
        centred square). Each image is embedded as `VIEWS_PER_IMAGE` enrollment views (`vision_models.augment`);
        the prototype is their normalized mean; the radius is the median similarity of each image's
        views to the prototype of the *other* images (of all views when there is one image); the spread
        (`pairs.spread_stats`) is the mean and main directions of their pair features, for the pair check."""
        if not images:
            raise ValueError("a reference needs at least one image")
        runs = [self._run(np.stack(enrollment_views(im, self.size))) for im in images]
        emb = np.stack([r[0] for r in runs])
        dim = emb.shape[-1]
        proto = prototype(emb.reshape(-1, dim))
        if len(images) == 1:
            sims = [emb[0] @ proto]
        else:
            sims = [emb[i] @ prototype(np.delete(emb, i, axis=0).reshape(-1, dim)) for i in range(len(images))]
        feats = np.concatenate([r[1] for r in runs])
        return Reference(proto, float(np.median(np.concatenate(sims))), spread_stats(feats))

    def enroll(self, sku_id: str, images: Sequence[np.ndarray]) -> None:
        """Add (or replace) the prototype of `sku_id` from a few reference crops; no retraining.

        Images are BGR, framed like a cell's centred square (e.g. `render_item` or a cell crop).
        """
        if not sku_id or sku_id == EMPTY:
            raise ValueError(f"cannot enroll label {sku_id!r}")
        if not images:
            raise ValueError("enroll needs at least one reference image")
        ref = self.reference(images)
        self._gallery.put(sku_id, *ref)
        log.info("sku_enrolled", sku=sku_id, images=len(images), labels=len(self.labels), radius=round(ref.radius, 3))

    def save_gallery(self, path: str | Path) -> None:
        """Write the gallery (with enrolled SKUs) atomically, e.g. over the model dir's gallery.npz."""
        self._gallery.save(path)


def rival_log_ratio(ratio: np.ndarray, rival: np.ndarray) -> np.ndarray:
    """log(runner-up's spread ratio / the label's), clipped to +-`LEAD_LOG_CLIP`; 0 where either is
    not measured (NaN or negative): what `ratio_weight` weighs into a read's lead."""
    r, q = np.asarray(ratio, np.float64), np.asarray(rival, np.float64)
    both = (r > 0) & (q > 0)
    out = np.zeros(r.shape)
    out[both] = np.clip(np.log(q[both] / r[both]), -LEAD_LOG_CLIP, LEAD_LOG_CLIP)
    return out


def _measured(ratio: float) -> float:
    """A spread ratio for `CellDetection`: -1 when not measured (not NaN: equal reads compare equal)."""
    return round(float(ratio), 3) if np.isfinite(ratio) else -1.0


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; an all-zero row stays zero)."""
    x = np.asarray(x, np.float32)
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    return out
