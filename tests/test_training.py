"""Baseline training: configs, holdout rule, imbalance weights, training-time attacks, augmentations, and an
end-to-end run on a tiny synthetic set (timm test_resnet) that must give a valid submission."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import LinearPixels, make_evalset
from fxbench.errors import DataError
from fxbench.training import (
    TrainingConfigError,
    class_weights,
    export_arrays,
    holdout_split,
    load_config,
    load_train_arrays,
    train_baseline,
)
from fxbench.training.adversarial import pgd_linf, trades_adversary
from fxbench.training.augment import augment
from fxbench.training.config import Augment
from fxbench.training.loop import Normalized
from safetensors import safe_open

EPS = 4 / 255
SHIPPED = ["erm", "pgd-at", "fgsm-rs", "trades"]


# --- configs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("recipe", ["gpu", "cpu"])
def test_shipped_configs_parse_at_canonical_resolution(name, recipe):
    c = load_config(name, recipe=recipe)
    assert c.recipe == recipe
    assert c.model.timm == "resnet10t" and c.model.kwargs == {"num_classes": 2, "in_chans": 1}
    assert c.holdout.fraction == 0.15
    if name != "erm":
        assert c.adversarial.eps == pytest.approx(EPS) and c.eps_text() == "4/255"
        assert c.selection.attack.eps == pytest.approx(EPS)


def test_the_three_baselines_share_everything_but_the_objective():
    configs = [load_config(n, recipe="gpu") for n in ("erm", "pgd-at", "fgsm-rs")]
    shared = [
        "seed",
        "model",
        "normalize",
        "holdout",
        "imbalance",
        "augment",
        "optimizer",
        "schedule",
        "epochs",
        "batch_size",
        "amp",
    ]
    for key in shared:
        assert len({json.dumps(c.model_dump(mode="json")[key], sort_keys=True) for c in configs}) == 1, key
    assert [c.adversarial.method for c in configs] == ["none", "pgd", "fgsm_rs"]
    assert len({c.id for c in configs}) == 3


def test_cpu_recipe_is_reduced_not_lower_resolution():
    gpu, cpu = load_config("pgd-at", recipe="gpu"), load_config("pgd-at", recipe="cpu")
    assert cpu.epochs < gpu.epochs and 1 < cpu.adversarial.steps < gpu.adversarial.steps
    assert cpu.adversarial.alpha * cpu.adversarial.steps >= cpu.adversarial.eps  # can still reach the budget


def _write_config(tmp_path: Path, patch: dict, name: str = "cfg.yaml") -> Path:
    raw = yaml.safe_load(_shipped("erm").read_text())
    raw = _deep(raw, patch)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _shipped(name: str) -> Path:
    from fxbench.training.config import CONFIG_DIR

    return CONFIG_DIR / f"{name}.yaml"


def _deep(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _deep(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_unknown_key_and_bad_values_name_file_and_field(tmp_path):
    path = _write_config(tmp_path, {"optimizer": {"lrate": 0.1}})
    with pytest.raises(TrainingConfigError, match=r"cfg\.yaml.*optimizer\.lrate: unknown key"):
        load_config(path)
    path = _write_config(tmp_path, {"adversarial": {"method": "pgd", "eps": "four"}})
    with pytest.raises(TrainingConfigError, match=r"adversarial\.eps"):
        load_config(path)
    path = _write_config(tmp_path, {"model": {"kwargs": {"pretrained": True}}})
    with pytest.raises(TrainingConfigError, match="pretrained"):
        load_config(path)
    with pytest.raises(TrainingConfigError, match="--recipe tpu"):
        load_config("erm", recipe="tpu")
    with pytest.raises(TrainingConfigError, match="shipped configs: effb0-erm-v2, effb0-pgd-at-v2, effl0-erm-pt, effl0-pgd-at-pt, effl0-trades-pt, erm, erm-v2, fgsm-rs, pgd-at, pgd-at-v2, trades, trades-v2"):
        load_config("nope")


# --- holdout and class weights ----------------------------------------------------------------------------


def test_holdout_is_the_hash_smallest_per_class_and_order_free():
    ids = [f"IMG{i:07d}" for i in range(40)]
    y = torch.tensor([1 if i % 5 == 0 else 0 for i in range(40)])  # 8 fractured, 32 not
    split = holdout_split(ids, y, fraction=0.25, salt="s")
    held = {ids[i] for i in split.holdout.tolist()}
    # Hand-computed: per class, the round(0.25 n) ids with the smallest sha256("s/<id>").
    expect = set()
    for label, k in ((1, 2), (0, 8)):
        members = sorted(
            (i for i, v in zip(ids, y.tolist()) if v == label),
            key=lambda i: hashlib.sha256(f"s/{i}".encode()).hexdigest(),
        )
        expect |= set(members[:k])
    assert held == expect
    assert set(split.fit.tolist()).isdisjoint(split.holdout.tolist())
    assert len(split.fit) + len(split.holdout) == 40
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    again = holdout_split([ids[i] for i in perm.tolist()], y[perm], fraction=0.25, salt="s")
    assert {ids[perm[i]] for i in again.holdout.tolist()} == held
    other = holdout_split(ids, y, fraction=0.25, salt="t")
    assert {ids[i] for i in other.holdout.tolist()} != held


def test_class_weights_match_hand_computed():
    y = torch.tensor([0] * 10 + [1] * 2)
    # w_c = N / (2 N_c): 12 / 20 and 12 / 4.
    assert class_weights(y, "class_weighted_ce").tolist() == pytest.approx([0.6, 3.0])
    assert class_weights(y, "none").tolist() == [1.0, 1.0]
    # Each class then carries half of the summed weight.
    w = class_weights(y, "class_weighted_ce")
    assert float(w[0] * 10) == pytest.approx(float(w[1] * 2))


# --- training-time attacks ---------------------------------------------------------------------------------


def _linear_pixels(seed: int = 0, size: int = 224):
    g = torch.Generator().manual_seed(seed)
    w = 1e-3 * torch.randn(1, size * size, generator=g)  # small: the loss must not saturate (zero gradient)
    # Normalised with std 0.25: a perturbation applied after normalisation would move pixels by eps / 4.
    return Normalized(LinearPixels(w, b=0.0), mean=0.5, std=0.25), w.view(1, 1, size, size)


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    x = torch.rand(n, 1, 224, 224, generator=torch.Generator().manual_seed(seed))
    x[:, :, :10] = 0.0  # pixels at the box edges: the [0, 1] clip must bind there
    x[:, :, -10:] = 1.0
    return x


def test_pgd_on_a_linear_model_reaches_the_known_corner():
    model, w = _linear_pixels()
    x, y = _images(), torch.ones(3, dtype=torch.long)
    # For label 1 the loss log(1 + e^-z) rises fastest along -w: the answer is clip(x - eps sign(w), 0, 1).
    x_adv = pgd_linf(model, x, y, eps=EPS, alpha=1 / 255, steps=6, random_start=False)
    assert torch.allclose(x_adv, (x - EPS * w.sign()).clamp(0, 1), atol=1e-7)
    # From a random start it needs (2 eps) / alpha steps to cross the ball.
    x_adv = pgd_linf(
        model,
        x,
        y,
        eps=EPS,
        alpha=1 / 255,
        steps=9,
        random_start=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(x_adv, (x - EPS * w.sign()).clamp(0, 1), atol=1e-7)


def test_fgsm_rs_step_is_the_known_answer_within_eps_and_box():
    model, w = _linear_pixels()
    x, y = _images(), torch.zeros(3, dtype=torch.long)
    x_adv = pgd_linf(
        model,
        x,
        y,
        eps=EPS,
        alpha=1.25 * EPS,
        steps=1,
        random_start=True,
        generator=torch.Generator().manual_seed(5),
    )
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    start = (x + (2 * u - 1) * EPS).clamp(0, 1) - x
    # Label 0: the loss rises along +w.
    expect = (x + (start + 1.25 * EPS * w.sign()).clamp(-EPS, EPS)).clamp(0, 1)
    assert torch.allclose(x_adv, expect, atol=1e-7)
    assert (x_adv - x).abs().max() <= EPS + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_and_trades_stay_in_the_budget_on_a_cnn(tiny_model):
    net = Normalized(tiny_model.net, mean=0.5, std=0.25).train()
    for p in net.parameters():
        p.requires_grad_(True)
    x, y = _images(2), torch.tensor([0, 1])
    g = torch.Generator().manual_seed(0)
    for x_adv in (
        pgd_linf(net, x, y, eps=EPS, alpha=2 / 255, steps=3, generator=g),
        trades_adversary(net, x, eps=EPS, alpha=2 / 255, steps=3, generator=g),
    ):
        assert (x_adv - x).abs().max() <= EPS + 1e-7
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() > EPS / 2  # it did move
    assert all(p.grad is None for p in net.parameters())  # attacks leave no parameter gradients


# --- augmentations -----------------------------------------------------------------------------------------


def test_augment_identity_flip_and_range():
    x = _images(4)
    g = torch.Generator().manual_seed(0)
    # grid_sample's float32 coordinates are exact to about 3e-5 of a pixel value (1/100 of a grey level).
    assert torch.allclose(augment(x, Augment(), generator=g), x, atol=1e-4)
    assert torch.allclose(augment(x, Augment(hflip=1.0), generator=g), x.flip(-1), atol=1e-4)
    strong = Augment(
        hflip=0.5, rotate_deg=10, scale=(0.9, 1.1), translate=0.05, brightness=0.05, contrast=0.1
    )
    out = augment(x, strong, generator=g)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x, atol=1e-3)
    # Same seed, same augmentation.
    a = augment(x, strong, generator=torch.Generator().manual_seed(7))
    b = augment(x, strong, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_augment_shift_moves_content_and_fills_black():
    x = torch.zeros(1, 1, 224, 224)
    x[..., 100:124, 100:124] = 1.0
    cfg = Augment(translate=0.1)
    g = torch.Generator().manual_seed(0)
    out = augment(x, cfg, generator=g)
    # Mass is kept (the square stays inside) but its centre moved.
    assert float(out.sum()) == pytest.approx(float(x.sum()), rel=0.02)
    rows = torch.arange(224.0).view(1, 1, -1, 1)
    assert (
        abs(float((out * rows).sum() / out.sum()) - 111.5) > 0.5
        or abs(float((out * rows.transpose(2, 3)).sum() / out.sum()) - 111.5) > 0.5
    )


# --- data sources ------------------------------------------------------------------------------------------


def _learnable(n: int = 12, seed: int = 0):
    """Synthetic canonical set with a learnable signal: fractured images carry a bright bar."""
    ev = make_evalset(n=n, seed=seed)
    x = ev.x * 0.5
    x[ev.y == 1, :, 90:130, 60:160] += 0.5
    meta = ev.meta.assign(split="train")
    return type(ev)(
        ids=ev.ids, x=(x * 255).round() / 255, y=ev.y, masks=ev.masks, meta=meta, dataset=ev.dataset
    )


@pytest.fixture
def fake_data(monkeypatch):
    """fxbench.data.load_arrays replaced: records the split asked for, serves the synthetic set."""
    calls = []

    def load_arrays(path=None, *, split="eval", limit=None):
        calls.append(split)
        ev = _learnable()
        return type(ev)(
            ids=ev.ids,
            x=ev.x,
            y=ev.y,
            masks=ev.masks,
            meta=ev.meta.assign(split=split if split != "eval" else "test"),
            dataset=ev.dataset,
        )

    import fxbench.data

    monkeypatch.setattr(fxbench.data, "load_arrays", load_arrays)
    return calls


@pytest.mark.parametrize("suffix,encoding", [(".npz", "raw"), (".npz", "png"), (".safetensors", "raw")])
def test_export_round_trip_and_eval_split_refused(tmp_path, fake_data, suffix, encoding):
    info = export_arrays("train", tmp_path / f"train{suffix}", encoding=encoding)
    assert info.n == 12 and info.n_fractured == 6
    arrays = load_train_arrays(info.path)
    ref = _learnable()
    assert arrays.ids == ref.ids and torch.equal(arrays.y, ref.y)
    assert arrays.x.dtype == torch.uint8 and torch.equal(arrays.x, (ref.x * 255).round().to(torch.uint8))
    export_arrays("eval", tmp_path / f"eval{suffix}", encoding=encoding)
    with pytest.raises(DataError, match="'eval' split"):
        load_train_arrays(tmp_path / f"eval{suffix}")


def test_a_dataset_folder_is_read_as_the_train_split_only(tmp_path, fake_data):
    arrays = load_train_arrays(tmp_path)
    assert fake_data == ["train"] and len(arrays) == 12


def test_bad_array_files_are_refused_with_the_field(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((2, 1, 64, 64), np.uint8), y=np.array([0, 1]), image_id=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"bad\.npz: x has shape \(2, 1, 64, 64\)"):
        load_train_arrays(path)
    np.savez(path, x=np.zeros((2, 1, 224, 224), np.uint8), y=np.array([0, 2]), image_id=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"y must hold 0 .* found \[2\]"):
        load_train_arrays(path)
    with pytest.raises(DataError, match="not found"):
        load_train_arrays(tmp_path / "missing.npz")


# --- end to end --------------------------------------------------------------------------------------------

# 12 images: 2 per class held out, 8 trained on in 2 batches of 4.
TINY = {
    "model": {"timm": "test_resnet"},
    "cpu": {"epochs": 2, "batch_size": 4, "eval_batch_size": 4},
    "holdout": {"fraction": 0.34},
}


def _train_file(tmp_path: Path, fake_data) -> Path:
    return export_arrays("train", tmp_path / "train.npz").path


def test_erm_end_to_end_gives_a_valid_fp16_submission(tmp_path, fake_data):
    from fxbench.models import load_submission, validate_submission
    from fxbench.models.spec import ModelSpec

    cfg = _write_config(tmp_path, TINY)
    result = train_baseline(cfg, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    folder = result.path
    assert folder == tmp_path / "subs" / "fxb-resnet10t-erm"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "learning_curves.png",
        "model.yaml",
        "training_log.json",
        "weights.safetensors",
    ]
    assert not [p for p in (tmp_path / "subs").iterdir() if p.name.startswith(".")]  # no temp folder left

    spec = ModelSpec.from_yaml(folder / "model.yaml")
    assert spec.authors == ("fxbench baselines",) and spec.input.size == 224 and spec.input.channels == 1
    assert spec.training.adversarial is False and spec.training.method == "erm"
    assert spec.checkpoint.sha256 == hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes

    report = validate_submission(folder)
    assert report.ok, report.error

    card = (folder / "README.md").read_text()
    assert "recipe: **cpu**" in card and "wall time" in card and "selected epoch" in card
    log = json.loads((folder / "training_log.json").read_text())
    assert len(log["epochs"]) == 2 and log["config"]["recipe"] == "cpu"
    scores = [e["score"] for e in log["epochs"]]
    assert log["best_epoch"] == 1 + scores.index(max(scores))
    assert log["data"]["n_holdout"] == 4 and log["data"]["n_holdout_fractured"] == 2

    # The written mean/std reproduce the training-time forward: canonical model == Normalized(net).
    o = result.outcome
    sub = load_submission(folder)
    import timm

    net = timm.create_model("test_resnet", pretrained=False, num_classes=2, in_chans=1)
    net.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in o.state.items()})
    twin = Normalized(net, mean=o.mean, std=o.std).eval()
    x = _learnable().x[:4]
    with torch.no_grad():
        assert torch.allclose(sub.model(x), twin(x), atol=1e-5)


def test_adversarial_recipe_selects_on_holdout_pgd_and_records_eps(tmp_path, fake_data):
    from fxbench.models.spec import ModelSpec

    raw = yaml.safe_load(_shipped("fgsm-rs").read_text())
    path = tmp_path / "fgsm.yaml"
    cpu = {**TINY["cpu"], "epochs": 1, "selection": {"attack": {"steps": 1}}}
    path.write_text(yaml.safe_dump(_deep(raw, {**TINY, "cpu": cpu})))
    result = train_baseline(path, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    spec = ModelSpec.from_yaml(result.path / "model.yaml")
    assert spec.training.adversarial and spec.training.method == "fgsm-rs"
    assert spec.training.eps.text == "4/255" and spec.training.norm.value == "linf"
    rec = result.outcome.history[0]
    assert rec.holdout.pgd_balanced_accuracy is not None
    assert rec.score == pytest.approx((rec.holdout.balanced_accuracy + rec.holdout.pgd_balanced_accuracy) / 2)


def test_time_limit_cuts_the_epochs_and_is_recorded(tmp_path, fake_data):
    cfg = _write_config(tmp_path, {**TINY, "cpu": {**TINY["cpu"], "epochs": 5, "time_limit_s": 0.001}})
    result = train_baseline(cfg, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    o = result.outcome
    assert len(o.history) == 1 and o.planned_epochs == 1
    assert "1 of 5 epochs" in o.stop_reason and "time_limit_s" in o.notes[0]
    assert "1 of 5 epochs" in (result.path / "README.md").read_text()


def test_fit_epochs_known_answers():
    from fxbench.training.loop import fit_epochs

    # 100 s budget, epoch 1 took 12 s, later epochs 8 s: 1 + floor(88 / 8) = 12.
    assert fit_epochs(30, limit_s=100, elapsed_s=12, epoch_s=8) == 12
    assert fit_epochs(5, limit_s=100, elapsed_s=12, epoch_s=8) == 5  # never more than planned
    assert fit_epochs(30, limit_s=10, elapsed_s=12, epoch_s=8) == 1  # over budget already: stop after 1


def test_cli_train_writes_the_folder_and_refuses_bad_input(tmp_path, fake_data, cli):
    cfg = _write_config(tmp_path, {**TINY, "cpu": {**TINY["cpu"], "epochs": 1}})
    data = _train_file(tmp_path, fake_data)
    r = cli("train", cfg, "--data", data, "--out", tmp_path / "subs", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r
    assert r.stdout.strip() == str(tmp_path / "subs" / "fxb-resnet10t-erm")
    bad = _write_config(tmp_path, {"cpu": {"epochs": 0}}, name="bad.yaml")
    r = cli("train", bad, "--data", data, "--out", tmp_path / "subs", "--device", "cpu")
    assert (
        r.exit_code == 2 and "bad.yaml" in r.stderr and "epochs" in r.stderr and "Traceback" not in r.stderr
    )
    r = cli("train", cfg, "--data", tmp_path / "nothing.npz", "--device", "cpu")
    assert r.exit_code == 2 and "not found" in r.stderr


def test_trades_with_bf16_autocast_and_channels_last_trains(tmp_path, fake_data):
    # The GPU recipe's code paths (bf16 autocast, channels_last), run on the CPU.
    raw = yaml.safe_load(_shipped("trades").read_text())
    cpu = {
        **TINY["cpu"],
        "epochs": 1,
        "amp": "bf16",
        "channels_last": True,
        "adversarial": {"steps": 1},
        "selection": {"attack": {"steps": 1}},
    }
    path = tmp_path / "trades.yaml"
    path.write_text(yaml.safe_dump(_deep(raw, {**TINY, "cpu": cpu})))
    result = train_baseline(path, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    rec = result.outcome.history[0]
    assert np.isfinite(rec.train_loss) and rec.holdout.pgd_balanced_accuracy is not None
    with safe_open(str(result.path / "weights.safetensors"), framework="pt") as f:
        assert all(f.get_tensor(k).is_contiguous() for k in f.keys())


# --- v2: trained to convergence --------------------------------------------------------------------------

V2 = ["erm-v2", "pgd-at-v2", "trades-v2", "effb0-erm-v2", "effb0-pgd-at-v2"]


@pytest.mark.parametrize("recipe", ["gpu", "cpu"])
def test_v2_configs_share_everything_but_objective_and_architecture(recipe):
    configs = {n: load_config(n, recipe=recipe) for n in V2}
    shared = [
        "seed",
        "normalize",
        "holdout",
        "imbalance",
        "augment",
        "optimizer",
        "schedule",
        "epochs",
        "batch_size",
        "amp",
        "channels_last",
        "early_stopping",
        "time_guard_s",
    ]
    for key in shared:
        assert len({json.dumps(c.model_dump(mode="json")[key], sort_keys=True) for c in configs.values()}) == 1, key
    for c in configs.values():
        assert c.early_stopping is not None and c.time_limit_s is None  # trained to convergence, not to a budget
        assert c.model.kwargs == {"num_classes": 2, "in_chans": 1}
        assert c.id.endswith("-v2") and c.holdout == load_config("erm", recipe=recipe).holdout
    # Same objective on both architectures: the pairs differ only in the architecture.
    for r10t, eff in (("erm-v2", "effb0-erm-v2"), ("pgd-at-v2", "effb0-pgd-at-v2")):
        a, b = configs[r10t].model_dump(mode="json"), configs[eff].model_dump(mode="json")
        diff = {k for k in a if a[k] != b[k]} - {"id", "name", "description"}
        assert diff == {"model"}, diff
    adv = {n: (c.adversarial.method, c.eps_text()) for n, c in configs.items()}
    assert adv == {
        "erm-v2": ("none", None),
        "pgd-at-v2": ("pgd", "4/255"),
        "trades-v2": ("trades", "4/255"),
        "effb0-erm-v2": ("none", None),
        "effb0-pgd-at-v2": ("pgd", "4/255"),
    }
    assert len({c.id for c in configs.values()}) == 5
    assert not {c.id for c in configs.values()} & {load_config(n).id for n in SHIPPED}  # v1 ids untouched


def test_v2_architectures_fit_the_12_mb_limit_as_fp16():
    import timm

    for name in V2:
        c = load_config(name)
        net = timm.create_model(c.model.timm, pretrained=False, **c.model.kwargs)
        n = sum(t.numel() for t in net.state_dict().values() if t.is_floating_point())
        assert 2 * n < 12e6, (name, 2 * n)


def test_early_stopping_stops_after_patience_and_keeps_the_best(tmp_path, fake_data, monkeypatch):
    import fxbench.training.loop as loop

    # Known holdout scores per epoch: best at epoch 2, then two epochs without a gain -> stop after epoch 4.
    scores = iter([0.6, 0.7, 0.65, 0.7, 0.9, 0.9])
    real = loop.evaluate_holdout

    def scripted(*args, **kwargs):
        h = real(*args, **kwargs)
        if kwargs.get("amp", True) is False:  # the final re-score of the saved weights
            return h
        return loop.HoldoutScores(next(scores), h.sensitivity, h.specificity, h.auroc, None)

    monkeypatch.setattr(loop, "evaluate_holdout", scripted)
    cfg = _write_config(tmp_path, {**TINY, "cpu": {**TINY["cpu"], "epochs": 6}, "early_stopping": {"patience": 2}})
    result = train_baseline(cfg, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    o = result.outcome
    assert [r.score for r in o.history] == [0.6, 0.7, 0.65, 0.7]  # a tie (0.7) is not a gain
    assert o.best_epoch == 2 and o.planned_epochs == 6
    assert o.stop_reason.startswith("early stopping after epoch 4 of 6") and "last at epoch 2" in o.stop_reason
    card = (result.path / "README.md").read_text()
    assert "early stopping after epoch 4 of 6" in card and "## Learning curves" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and not line.startswith("| epoch")]
    assert len(rows) == 4 and rows[1].startswith("| **2**")  # the selected epoch in bold
    assert "![learning curves](learning_curves.png)" in card
    assert (result.path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = json.loads((result.path / "training_log.json").read_text())
    assert [e["train_loss"] for e in log["epochs"]] == [r.train_loss for r in o.history]


def test_time_guard_stops_without_shortening_the_schedule(tmp_path, fake_data):
    cfg = _write_config(tmp_path, {**TINY, "cpu": {**TINY["cpu"], "epochs": 5, "time_guard_s": 0.001}})
    result = train_baseline(cfg, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    o = result.outcome
    assert len(o.history) == 1 and o.planned_epochs == 5 and not o.notes  # schedule untouched
    assert "time guard" in o.stop_reason and "not converged" in o.stop_reason
    # The learning rate followed the 5-epoch schedule: after 1 warm-up epoch it is still at the peak.
    assert o.history[0].lr == pytest.approx(load_config(cfg, recipe="cpu").optimizer.lr)


def test_adversarial_learning_curves_record_holdout_robust_accuracy(tmp_path, fake_data):
    raw = yaml.safe_load(_shipped("pgd-at-v2").read_text())
    cpu = {**TINY["cpu"], "epochs": 1, "adversarial": {"steps": 1}, "selection": {"attack": {"steps": 1}}}
    path = tmp_path / "pgd.yaml"
    path.write_text(yaml.safe_dump(_deep(raw, {**TINY, "cpu": cpu})))
    result = train_baseline(path, data=_train_file(tmp_path, fake_data), out=tmp_path / "subs", device="cpu")
    h = result.outcome.history[0].holdout
    assert h.pgd_accuracy is not None and 0 <= h.pgd_accuracy <= 1
    # Robust accuracy is the plain mean of correct answers under attack; balanced accuracy averages classes.
    card = (result.path / "README.md").read_text()
    assert "holdout robust acc (PGD)" in card and "train loss (adversarial)" in card
    assert json.loads((result.path / "training_log.json").read_text())["epochs"][0]["holdout"]["pgd_accuracy"] == h.pgd_accuracy
