"""Within-class whitening of the pooled features (vision_models.train.whiten): the maths on data
whose nuisance is known, and the ONNX graph it bakes in, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from vision_models.train.whiten import design_residuals, unit, whiten, whitening


def _views(rng: np.random.Generator, means: np.ndarray, nuisance: np.ndarray, views: int = 12) -> np.ndarray:
    """`views` views of each class mean, moved strongly along the nuisance directions every class
    shares (pose, light, a hand: rows of `nuisance`) and a little at random."""
    out = means[:, None, :] + rng.standard_normal((len(means), views, len(nuisance))) @ nuisance
    return out + rng.standard_normal(out.shape) * 0.05


def _nearest_accuracy(means: np.ndarray, reads: np.ndarray, u=None, g=None) -> float:
    protos, x = unit(means), reads.reshape(-1, reads.shape[-1])
    if u is not None:
        protos, x = unit(whiten(protos, u, g)), whiten(x, u, g)
    truth = np.repeat(np.arange(len(means)), reads.shape[1])
    return float(np.mean(np.argmax(unit(x) @ protos.T, axis=1) == truth))


def test_whitening_learned_on_other_classes_separates_new_ones():
    rng = np.random.default_rng(3)
    dim = 48
    nuisance = np.linalg.qr(rng.standard_normal((dim, 3)))[0].T * 1.5
    train_means = unit(rng.standard_normal((60, dim)))
    train = _views(rng, train_means, nuisance)
    scatter = sum(r.T @ r for r in (design_residuals(m[None], v) for m, v in zip(train_means, train, strict=True)))
    u, g = whitening(scatter / train.shape[0] / train.shape[1], rank=8)
    means = unit(rng.standard_normal((40, dim)))  # never-seen classes, the same kind of shelf
    reads = _views(rng, means, nuisance)
    before = _nearest_accuracy(means, reads)
    after = _nearest_accuracy(means, reads, u, g)
    assert before < 0.8
    assert after > 0.97


def test_whitening_shrinks_the_nuisance_relative_to_the_rest():
    rng = np.random.default_rng(5)
    dim = 20
    d = unit(rng.standard_normal(dim))
    scatter = np.eye(dim) * 0.01 + 4.0 * np.outer(d, d)
    u, g = whitening(scatter, rank=2, alpha=0.1)
    assert u.shape == (dim, 2) and g.shape == (2,)
    assert abs(float(u[:, -1] @ d)) > 0.999  # the top direction found
    other = unit(rng.standard_normal(dim) - (rng.standard_normal(dim) @ d) * d)
    other -= (other @ d) * d
    ratio_before = 1.0
    ratio_after = np.linalg.norm(whiten(d[None], u, g)) / np.linalg.norm(whiten(other[None], u, g))
    assert ratio_after < 0.1 * ratio_before


@pytest.mark.parametrize("rank", [0, 20, -1])
def test_whitening_refuses_a_rank_out_of_range(rank):
    with pytest.raises(ValueError):
        whitening(np.eye(20), rank=rank)


def test_design_residuals_are_zero_for_views_at_the_centre():
    refs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    centre = unit(np.array([[1.0, 1.0, 0.0]]))
    r = design_residuals(refs, np.vstack([centre * 3, [[0.0, 0.0, 2.0]]]))
    assert np.allclose(r[0], 0)
    assert np.allclose(r[1], [-centre[0, 0], -centre[0, 1], 1.0])


def test_whitened_graph_computes_what_numpy_does_and_drops_the_old_projection():
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from vision_models.train.whiten import whitened_model

    rng = np.random.default_rng(7)
    dim, rank = 16, 4
    w_in = rng.standard_normal((6, dim)).astype(np.float32)
    w_proj = rng.standard_normal((dim, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["crops", "w_in"], ["features"]),
         helper.make_node("MatMul", ["features", "w_proj"], ["embedding"])],
        "tiny", [helper.make_tensor_value_info("crops", onnx.TensorProto.FLOAT, ["n", 6])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", 5]),
         helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["n", dim])],
        [numpy_helper.from_array(w_in, "w_in"), numpy_helper.from_array(w_proj, "w_proj")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    u = np.linalg.qr(rng.standard_normal((dim, rank)))[0].astype(np.float32)
    g = np.array([-0.9, -0.5, 0.5, 2.0], np.float32)
    out = whitened_model(model, u, g)
    assert "w_proj" not in {i.name for i in out.graph.initializer}
    sess = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((3, 6)).astype(np.float32)
    emb, feats = sess.run(["embedding", "features"], {"crops": x})
    want = whiten(x @ w_in, u, g)
    assert emb.shape == (3, dim)
    assert np.allclose(feats, want, atol=1e-4)
    assert np.allclose(emb, unit(want), atol=1e-5)


def test_a_model_without_pooled_features_is_refused():
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    from vision_models.train.whiten import whitened_model

    graph = helper.make_graph([helper.make_node("Identity", ["crops"], ["embedding"])], "bare",
                              [helper.make_tensor_value_info("crops", onnx.TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["n", 4])])
    with pytest.raises(ValueError, match="features"):
        whitened_model(helper.make_model(graph), np.eye(4, 2, dtype=np.float32), np.zeros(2, np.float32))


def test_the_shipped_model_whitened_gives_its_own_features_whitened():
    onnx = pytest.importorskip("onnx")
    from vision_models.recognizer import DEFAULT_MODEL_DIR, MODEL_FILE
    from vision_models.train.whiten import whitened_model

    path = DEFAULT_MODEL_DIR / MODEL_FILE
    src = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dim = next(o.shape[1] for o in src.get_outputs() if o.name == "features")
    rng = np.random.default_rng(11)
    u = np.linalg.qr(rng.standard_normal((dim, 8)))[0].astype(np.float32)
    g = rng.uniform(-0.9, 2.0, 8).astype(np.float32)
    out = ort.InferenceSession(whitened_model(onnx.load(str(path)), u, g).SerializeToString(),
                               providers=["CPUExecutionProvider"])
    x = rng.uniform(-1, 1, (3, 3, 96, 96)).astype(np.float32)
    (feats,) = src.run(["features"], {"crops": x})
    emb, white = out.run(["embedding", "features"], {"crops": x})
    assert emb.shape == (3, dim)
    assert np.allclose(white, whiten(feats, u, g), atol=1e-3)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
