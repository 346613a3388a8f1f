"""v3's primary endpoint (shuffled AUC), enrichment, the position prior and the stronger references: known
answers, an independent implementation (scikit-learn's weighted ROC AUC) and the committed prior."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import linear_model
from fxbench.definition import load_definition
from fxbench.errors import FxbenchError
from fxbench.explanations import METRICS, MetricInputs, attribute, parse_config, reference_maps
from fxbench.explanations.endpoints import enrichment, shuffled_auc
from fxbench.explanations.maps import for_localisation, smooth
from fxbench.explanations.prior import (
    PriorParams,
    from_cells,
    load_prior,
    mask_density,
    prior_document,
    resolve,
    to_cells,
)
from sklearn.metrics import roc_auc_score

SIZE = 224


def write_prior(tmp_path, density: np.ndarray, cell: int = 4) -> PriorParams:
    blob = (json.dumps(prior_document(density, cell, {"split": "test-fixture"})) + "\n").encode()
    path = tmp_path / "prior.json"
    path.write_bytes(blob)
    return PriorParams(file=str(path), sha256=hashlib.sha256(blob).hexdigest())


def cell_masks(n: int = 12, seed: int = 0) -> np.ndarray:
    """Masks made of whole 4 x 4 cells (so the committed cell format holds their density exactly), near the
    centre as FracAtlas's are: rectangles of 2..6 cells at offsets within +-48 px of the centre."""
    rng = np.random.default_rng(seed)
    m = np.zeros((n, 1, SIZE, SIZE), dtype=bool)
    for i in range(n):
        r0, c0 = (rng.integers(-12, 10, size=2) + 28) * 4
        h, w = rng.integers(2, 7, size=2) * 4
        m[i, 0, r0 : r0 + h, c0 : c0 + w] = True
    return m


def gaussian(sigma_px: float = 40.0) -> torch.Tensor:
    r = torch.arange(SIZE, dtype=torch.float64) - (SIZE - 1) / 2
    return torch.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma_px**2).float()


def score(name: str, maps: np.ndarray, masks: np.ndarray, x: np.ndarray | None = None, params=None):
    m = METRICS.get(name)
    x = np.full(maps.shape, 0.5, dtype=np.float32) if x is None else x
    inp = MetricInputs(x, maps.astype(np.float32), masks, ties="share", constant_maps="score")
    return m.score(inp, params if params is not None else m.params()).values


def test_a_centred_gaussian_saliency_is_at_chance_on_the_primary_endpoint_but_wins_v2_auc_in_anatomy(tmp_path):
    """The issue's known answer: a linear model z = w.x with w a centred Gaussian has saliency |w| / 2, a map
    of position alone. Over images whose masks follow the prior, its mean shuffled AUC is exactly 1/2 (sum over
    images turns the positives into the prior: sum_pq d(p) d(q) K = 1/2), at the battery's common scale
    too; v2's AUC inside the anatomy rewards it because the masks sit near the centre."""
    masks = cell_masks()
    prior = write_prior(tmp_path, mask_density(masks))
    x = torch.full((len(masks), 1, SIZE, SIZE), 0.5)
    model = linear_model(gaussian())
    sal = attribute(model, x, name="saliency", params=METHODS_PARAMS, batch_size=4)
    assert torch.allclose(sal[0, 0], gaussian() / 2, atol=1e-6)  # the map is the Gaussian: by hand
    params = METRICS.get("shuffled_auc").params(prior=prior)
    # the prior's 6 significant digits move each weight by <= 5e-6 relative: the mean by <= 1e-5
    for maps in (sal, smooth(sal, 4.0)):
        s = score("shuffled_auc", maps.numpy(), masks, params=params)
        assert abs(s.mean() - 0.5) < 1e-5
        assert s.std() > 0.05  # per image it is not 1/2: only on average
    auc_anatomy = score("auc_anatomy", sal.numpy(), masks, x.numpy(),
                        METRICS.get("auc_anatomy").params(threshold=0.1))
    assert auc_anatomy.mean() > 0.75  # v2 called this map a good localiser


def test_any_position_only_map_is_at_chance_and_a_map_of_the_fracture_is_not(tmp_path):
    masks = cell_masks(16, seed=3)
    prior = write_prior(tmp_path, mask_density(masks))
    params = METRICS.get("shuffled_auc").params(prior=prior)
    rng = np.random.default_rng(0)
    fixed = rng.random((SIZE, SIZE)).astype(np.float32)  # the same arbitrary map on every image
    for f in (fixed, np.asarray(load_prior(prior.file, prior.sha256)), np.zeros((SIZE, SIZE))):
        maps = np.broadcast_to(f, masks.shape).copy()
        assert abs(score("shuffled_auc", maps, masks, params=params).mean() - 0.5) < 1e-5
    s = score("shuffled_auc", masks.astype(np.float32), masks, params=params)
    assert s.min() > 0.8  # the mask itself: 1 - d(mask) / 2 per image


def test_shuffled_auc_equals_a_weighted_roc_auc_from_scikit_learn():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = np.round(rng.random(400), 1)  # many ties
        s = rng.random(400) < 0.1
        d = rng.random(400) ** 3
        d /= d.sum()
        y = np.r_[np.ones(s.sum()), np.zeros(400)]
        w = np.r_[np.full(s.sum(), 1 / s.sum()), d]
        want = roc_auc_score(y, np.r_[a[s], a], sample_weight=w)
        assert shuffled_auc(a, s, d) == pytest.approx(want, abs=1e-12)
        assert shuffled_auc(a**3 + 7, s, d) == pytest.approx(want, abs=1e-12)  # rank-based
        assert shuffled_auc(np.zeros(400), s, d) == 0.5


def test_enrichment_known_answers():
    masks = cell_masks(6)
    share = masks.reshape(6, -1).mean(axis=1)
    uniform = np.ones(masks.shape, dtype=np.float32)
    assert np.allclose(score("enrichment", uniform, masks), 1.0, atol=1e-12)
    assert np.allclose(score("enrichment", masks.astype(np.float32), masks), 1 / share, rtol=1e-12)
    assert np.all(score("enrichment", np.zeros(masks.shape, dtype=np.float32), masks) == 0)
    a = np.random.default_rng(0).random(SIZE * SIZE)
    s = masks[0].ravel()
    assert enrichment(a, s) == pytest.approx((a[s].sum() / a.sum()) / (s.sum() / s.size))
    assert METRICS.get("enrichment").reduce == "median"


def test_prior_cells_round_trip_and_tampering_is_refused(tmp_path):
    masks = cell_masks(5)
    d = mask_density(masks)
    assert d.sum() == pytest.approx(1.0) and np.allclose(from_cells(to_cells(d, 4), 4), d)
    # every image weighs the same whatever its mask's size
    for m in masks:
        assert d[m[0]].sum() >= 1 / len(masks) - 1e-12
    p = write_prior(tmp_path, d)
    assert np.allclose(load_prior(p.file, p.sha256), d, rtol=1e-5)
    with pytest.raises(FxbenchError, match="sha256"):
        load_prior(p.file, "0" * 64)


def test_the_committed_prior_is_the_training_splits_and_the_spec_names_its_bytes():
    cfg = parse_config(load_definition("v3").battery_config("explanations", "full"))
    p = cfg.localisation["shuffled_auc"].params.prior
    assert cfg.references["ref_prior"].prior == p == cfg.references["ref_prior_anatomy"].prior
    blob = resolve(p.file).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == p.sha256
    doc = json.loads(blob)
    assert doc["split"] == "train" and doc["n_images"] == 574 and doc["cell_px"] == 4
    d = load_prior(p.file, p.sha256)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    # where radiographs are framed: most of the mass within 56 px of the centre, none on the corners
    assert d[np.hypot(rows - 111.5, cols - 111.5) <= 56].sum() > 0.7
    assert d[:8, :8].sum() < 1e-3


def test_stronger_references_are_products_of_the_simple_ones(tmp_path):
    cfg = parse_config(load_definition("v3").battery_config("explanations", "quick"))
    x = torch.rand(3, 1, SIZE, SIZE)
    x[:, :, :, :40] = 0  # padding
    masks = torch.from_numpy(cell_masks(3))
    ref = {n: reference_maps(n, x, masks, params=cfg.references[n], seed=0) for n in cfg.references}
    anatomy = (x > 0.1).float()
    assert torch.equal(ref["ref_centre_anatomy"], ref["ref_centre"] * anatomy)
    assert torch.allclose(ref["ref_prior_anatomy"], ref["ref_prior"] * anatomy)
    d = torch.from_numpy(np.array(load_prior(cfg.references["ref_prior"].prior.file,
                                             cfg.references["ref_prior"].prior.sha256))).float()
    assert torch.allclose(ref["ref_prior"][1, 0], d / d.max())
    # the common scale: every map but the mask ceiling is blurred
    assert torch.equal(for_localisation("ref_mask", ref["ref_mask"], cfg), ref["ref_mask"])
    assert not torch.equal(for_localisation("ref_edge", ref["ref_edge"], cfg), ref["ref_edge"])


METHODS_PARAMS = parse_config(load_definition("v3").battery_config("explanations", "quick")).methods["saliency"]
