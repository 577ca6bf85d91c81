"""The diffusion transformer: inputs, shapes, learning, weights and their cards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from livespt.models.units import d_to_px2_per_frame, d_to_um2_s
from livespt.models.vit import DiffusionViT, ModelLoadError, ViTConfig, ViTEstimator, prepare
from livespt.models.vit.data import TrainingDistribution, simulate_windows
from livespt.models.vit.inputs import concat_inputs
from livespt.models.vit.model import VARIANTS, gaussian_nll
from livespt.models.vit.train import preset, save, train

SMALL = {"dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "cnn_channels": 4}


def _batch(n: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return simulate_windows(n, TrainingDistribution(), gen, length=length)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", [5, 10, 30])
def test_shapes_for_every_window_length_and_variant(variant: str, length: int) -> None:
    model = DiffusionViT(ViTConfig(variant=variant, **SMALL)).eval()
    x = _batch(6, length).inputs
    assert x.images.shape == (6, length, 15, 15)
    assert x.features.shape == (6, 27)
    with torch.no_grad():
        mu, ls = model(x.images, x.geometry, x.valid, x.features, x.acquisition)
    assert mu.shape == ls.shape == (6,)
    assert torch.isfinite(mu).all() and torch.isfinite(ls).all()


def test_padding_does_not_change_the_output() -> None:
    torch.manual_seed(0)
    model = DiffusionViT(ViTConfig(**SMALL)).eval()
    short, long = _batch(4, 8, seed=1).inputs, _batch(4, 12, seed=2).inputs
    both = concat_inputs([short, long])
    assert both.valid.shape == (8, 12) and not both.valid[:4, 8:].any()
    with torch.no_grad():
        alone, _ = model(short.images, short.geometry, short.valid, short.features,
                         short.acquisition)
        joint, _ = model(both.images, both.geometry, both.valid, both.features,
                         both.acquisition)
    torch.testing.assert_close(joint[:4], alone, rtol=1e-4, atol=1e-5)


def test_inputs_are_dimensionless() -> None:
    # The same window in other physical units (pixel size x 2, interval x 3) gives the
    # same network inputs, and D* converts back to the right physical D.
    b = _batch(5, 10, seed=3)
    a = b.acquisition
    common = dict(images_adu=b.inputs.images, frames=b.frames, valid=b.inputs.valid)
    kw = dict(exposure_s=a["exposure_s"], psf_sigma_um=a["psf_sigma_um"])
    origin = torch.floor(b.localized_um / a["pixel_size_um"] + 0.5) * a["pixel_size_um"]
    x1 = prepare(patch_origin_um=origin, localized_um=b.localized_um, sigma_um=b.sigma_um,
                 pixel_size_um=a["pixel_size_um"], frame_interval_s=a["frame_interval_s"],
                 **common, **kw)
    x2 = prepare(patch_origin_um=2 * origin, localized_um=2 * b.localized_um,
                 sigma_um=2 * b.sigma_um, pixel_size_um=2 * a["pixel_size_um"],
                 frame_interval_s=3 * a["frame_interval_s"],
                 **common, exposure_s=3 * a["exposure_s"], psf_sigma_um=2 * a["psf_sigma_um"])
    for name in ("geometry", "features", "acquisition"):
        torch.testing.assert_close(getattr(x1, name), getattr(x2, name), rtol=1e-4, atol=1e-5)
    d = torch.tensor([0.3])
    assert float(d_to_um2_s(d_to_px2_per_frame(d, 0.1, 0.05), 0.1, 0.05)) == pytest.approx(0.3)


def test_a_tiny_model_overfits_a_small_batch() -> None:
    torch.manual_seed(0)
    model = DiffusionViT(ViTConfig(**SMALL))
    b = _batch(8, 10, seed=4)
    model.fit_feature_scaling(b.inputs.features)
    x = b.inputs
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    first = None
    for _ in range(200):
        mu, ls = model(x.images, x.geometry, x.valid, x.features, x.acquisition)
        loss = ((mu - b.log_d_star) ** 2).mean() + 0.01 * gaussian_nll(mu, ls, b.log_d_star)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # still in train mode: the batch statistics it was fitted with
        mu, _ = model(x.images, x.geometry, x.valid, x.features, x.acquisition)
    # log D* spans about 8 units here; memorised to within 0.2 (20 % in D).
    assert float((mu - b.log_d_star).abs().max()) < 0.2 < first


def _tiny_weights(tmp_path: Path) -> Path:
    cfg = preset("tiny", max_steps=3, val_windows=64, val_every=3)
    model, history = train(cfg, "cpu", log=lambda _: None)
    path = tmp_path / "vit-tiny.pt"
    save(model, cfg, history, path)
    return path


def test_saved_weights_load_and_predict_identically(tmp_path: Path) -> None:
    path = _tiny_weights(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    for key in ("architecture", "training", "simulator", "metrics", "sha256", "date"):
        assert key in card
    est = ViTEstimator.load(path)
    b = _batch(8, 10, seed=5)
    p1 = est.predict(b.inputs, 0.1, 0.05)
    p2 = ViTEstimator.load(path).predict(b.inputs, 0.1, 0.05)
    np.testing.assert_array_equal(p1.d_um2_s, p2.d_um2_s)
    assert np.all(p1.d_um2_s > 0)
    assert np.all((p1.d_low_um2_s < p1.d_um2_s) & (p1.d_um2_s < p1.d_high_um2_s))


def test_training_continues_from_weights_and_the_card_keeps_their_history(
        tmp_path: Path) -> None:
    from livespt.server.cli.main import main

    first = _tiny_weights(tmp_path)
    out = tmp_path / "vit-tiny-continued.pt"
    rc = main(["train", "vit", "--preset", "tiny", "--steps", "2", "--init-from", str(first),
               "--out", str(out)])
    assert rc in (0, None)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["init_from"] == str(first)
    runs = card["history"]["previous_runs"]
    assert [r["file"] for r in runs] == [first.name]
    assert runs[0]["sha256"] == json.loads(first.with_suffix(".json").read_text())["sha256"]
    ViTEstimator.load(out)  # a loadable file of the same architecture
    # A missing start file is one clear line, before any training.
    assert main(["train", "vit", "--preset", "tiny", "--steps", "1", "--init-from",
                 str(tmp_path / "absent.pt"), "--out", str(tmp_path / "x.pt")]) != 0
    assert not (tmp_path / "x.pt").exists()


def test_missing_corrupt_or_foreign_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        ViTEstimator.load(tmp_path / "absent.pt")
    path = _tiny_weights(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes(blob))
    corrupt.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(ModelLoadError, match=r"corrupt\.pt: sha256"):
        ViTEstimator.load(corrupt)
    card = json.loads(path.with_suffix(".json").read_text())
    card["format"] = "something-else"
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="unknown format"):
        ViTEstimator.load(path)
    nocard = tmp_path / "nocard.pt"
    nocard.write_bytes(path.read_bytes())
    with pytest.raises(ModelLoadError, match=r"card nocard\.json is missing"):
        ViTEstimator.load(nocard)
    # A pickle that is not plain tensors is refused by weights_only loading.
    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": {}, "x": Path("/")}, evil)
    from livespt.models.vit.weights import sha256

    evil.with_suffix(".json").write_text(json.dumps({"format": "livespt-vit/1",
                                                     "sha256": sha256(evil)}))
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        ViTEstimator.load(evil)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this machine")
def test_cpu_and_cuda_agree(tmp_path: Path) -> None:
    path = _tiny_weights(tmp_path)
    b = _batch(64, 10, seed=6)
    cpu = ViTEstimator.load(path, "cpu").predict(b.inputs, 0.1, 0.05)
    gpu = ViTEstimator.load(path, "cuda").predict(b.inputs, 0.1, 0.05)
    # bf16 autocast on the GPU: agreement within a few percent in D.
    np.testing.assert_allclose(gpu.d_um2_s, cpu.d_um2_s, rtol=0.05)


def test_log_d_target_is_always_positive_d() -> None:
    b = _batch(32, 10, seed=7)
    assert torch.allclose(torch.exp(b.log_d_star.double()),
                          b.d_um2_s * 0.05 / 0.1**2, rtol=1e-5)
    assert math.isfinite(float(b.inputs.features.abs().max()))


def test_weights_written_before_the_ood_guard_load_with_the_guard_off(tmp_path: Path) -> None:
    from livespt.models.vit.model import OOD_BUFFERS
    from livespt.models.vit.weights import WEIGHTS_FORMAT, sha256

    model = DiffusionViT(ViTConfig(**SMALL))
    state = {k: v for k, v in model.state_dict().items() if k not in OOD_BUFFERS}
    old = tmp_path / "old.pt"
    cfg = {k: v for k, v in ViTConfig(**SMALL).to_dict().items() if k != "patch_norm"}
    torch.save({"format": WEIGHTS_FORMAT, "config": cfg, "state_dict": state}, old)
    old.with_suffix(".json").write_text(json.dumps({"format": WEIGHTS_FORMAT,
                                                    "sha256": sha256(old)}))
    est = ViTEstimator.load(old)
    assert est.model.config.patch_norm == "window" and not est.guard.fitted
    # ... but a file missing a real weight is still refused.
    del state["head.weight"]
    torch.save({"format": WEIGHTS_FORMAT, "config": cfg, "state_dict": state}, old)
    old.with_suffix(".json").write_text(json.dumps({"format": WEIGHTS_FORMAT,
                                                    "sha256": sha256(old)}))
    with pytest.raises(ModelLoadError, match=r"head\.weight"):
        ViTEstimator.load(old)
