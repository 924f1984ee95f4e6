"""Fusion sees the model card's margin doubt: a product read whose runner-up is nearly as close is
passed on as not `settled` (its name is unsure, its view may be clean), so the other frame, the
lane and the scale decide it; every read keeps its similarity, empty cells are always settled. The shipped model's card carries the
margin (calibrated on held-out generated designs) and the runtime detections agree with
`is_doubtful`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.core.fusion import FusionParams
from edge.services.evidence import ShelfView, cell_observations, cells_from_json, cells_to_json, doubt_gates
from hw_sim.camera.render import render_item
from vision_models import DEFAULT_MODEL_DIR, EMPTY, CellDetection, CellRoi, Recognizer, is_doubtful
from vision_models.recognizer import rival_log_ratio


def det(label: str, similarity: float, margin: float) -> CellDetection:
    return CellDetection("F1", 0, label, 0.9, "cola_zero", 0.1, similarity, margin)


def test_low_margin_product_reads_become_doubtful_for_fusion() -> None:
    q = FusionParams().min_quality
    clear, close, empty, poor = (
        det("cola", 0.99, 0.4),
        det("cola", 0.97, 0.05),
        det(EMPTY, 0.98, 0.01),
        det("cola", 0.6, 0.01),
    )
    obs = cell_observations([clear, close, empty, poor], min_margin=0.14)
    assert [o.quality for o in obs] == [0.99, 0.97, 0.98, 0.6]
    assert [o.settled for o in obs] == [True, False, True, False]
    assert [o.quality < q or not o.settled for o in obs] == [is_doubtful(d, q, 0.14) for d in (clear, close, empty, poor)]
    assert [o.settled for o in cell_observations([clear, close], min_margin=0.0)] == [True, True]


def test_a_read_the_pair_check_settled_is_not_doubted_for_its_margin() -> None:
    q = FusionParams().min_quality
    settled = CellDetection("F1", 0, "cola", 0.6, "cola_zero", 0.4, 0.97, 0.02, pair_z=4.0)
    unsure = CellDetection("F1", 0, "cola", 0.6, "cola_zero", 0.4, 0.97, 0.02, pair_z=1.0)
    poor = CellDetection("F1", 0, "cola", 0.6, "cola_zero", 0.4, 0.6, 0.02, pair_z=9.0)
    obs = cell_observations([settled, unsure, poor], min_margin=0.14, min_pair_z=3.0)
    assert [(o.quality, o.settled) for o in obs] == [(0.97, True), (0.97, False), (0.6, True)]
    assert [o.quality < q or not o.settled for o in obs] == [False, True, True]  # settled does not lift a poor likeness
    assert [is_doubtful(d, q, 0.14, 3.0) for d in (settled, unsure, poor)] == [False, True, True]
    assert is_doubtful(settled, q, 0.14)  # a card without min_pair_z: nothing settles a close margin


def test_the_margin_gate_judges_the_lead_which_is_the_margin_unless_the_recognizer_weighed_it() -> None:
    q = FusionParams().min_quality
    plain = CellDetection("F1", 0, "cola", 0.6, "cola_zero", 0.4, 0.97, 0.05)
    assert plain.lead == 0.05
    ahead = CellDetection("F1", 0, "cola", 0.6, "cola_zero", 0.4, 0.97, 0.05, lead=0.2)  # runner-up far off
    behind = CellDetection("F1", 0, "cola", 0.6, "cola_zero", 0.4, 0.97, 0.2, lead=0.05)  # label's views further
    assert [is_doubtful(d, q, 0.14) for d in (plain, ahead, behind)] == [True, False, True]
    assert [o.settled for o in cell_observations([plain, ahead, behind], 0.14)] == [False, True, False]


def test_the_rival_log_ratio_is_clipped_and_zero_where_a_ratio_is_not_measured() -> None:
    got = rival_log_ratio(np.array([2.0, 1.0, 1.0, -1.0, np.nan, 4.0]), np.array([2 * np.e, 1e6, 1e-6, 5.0, 5.0, -1.0]))
    assert got == pytest.approx([1.0, 3.0, -3.0, 0.0, 0.0, 0.0])


def test_the_shipped_card_carries_a_calibrated_margin_the_daemon_uses() -> None:
    rec = Recognizer.load(DEFAULT_MODEL_DIR)
    m, z = doubt_gates(rec)
    assert 0.0 < m < 0.5 and rec.card["doubt"]["calibration"]["wrong_trusted_rate"] <= 0.001
    rng = np.random.default_rng(0)
    cells = [rng.integers(0, 256, (64, 64, 3), np.uint8), render_item("cola", 64, rng), render_item("cola_zero", 64, rng)]
    dets = rec.recognize(np.concatenate(cells, axis=1), [CellRoi("F1", i, 64 * i, 0, 64, 64) for i in range(3)])
    assert [d.label for d in dets] == [EMPTY, "cola", "cola_zero"]  # noise reads as bare shelf
    q = FusionParams().min_quality
    obs = cell_observations(dets, m, z)
    assert obs[0].quality == dets[0].quality and obs[0].settled  # an empty cell: never margin-doubted
    assert [o.quality < q or not o.settled for o in obs[1:]] == [is_doubtful(d, q, m, z) for d in dets[1:]]


def test_the_session_journal_keeps_what_fusion_needs_of_each_cell() -> None:
    """The daemon decides from the journaled cells (after a restart too): an unsure name must come
    back unsure, or a restart between the capture and the decision could charge a look-alike."""
    obs = cell_observations([det("cola", 0.97, 0.02), det("cola", 0.99, 0.5), det(EMPTY, 0.98, 0.9)],
                            min_margin=0.14)
    back = cells_from_json(json.loads(json.dumps(cells_to_json(ShelfView(0, obs)))))
    assert back.cells == obs and [c.settled for c in back.cells] == [False, True, True]
    journaled_before = {k: v for k, v in cells_to_json(ShelfView(0, obs[:1]))["cells"][0].items() if k != "settled"}
    (cell,) = cells_from_json({"shelf": 0, "cells": [journaled_before]}).cells or []
    assert cell.settled and cell.quality == 0.97  # journaled before `settled`: then the doubt was in the quality
