"""The figures of :mod:`nni_shiftadd.plots`: weight histograms with their fits (Fig. 3/7), the architecture diagram
(Fig. 8), the Pareto front and its plots, and the ``nni-shiftadd plot`` command."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from nni_shiftadd.cli import main
from nni_shiftadd.hws import SharedConvWeight
from nni_shiftadd.plots import (pareto_front, plot_pareto, plot_pareto_pair, plot_subnet, plot_weight_histograms,
                                weight_fits, weight_pools)
from nni_shiftadd.plots.weights import fit_gaussian, fit_laplace, shape_stats
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.space.spec import baseline_arch, load_space, random_arch, validate_arch
from nni_shiftadd.tasks.supernet import SupernetConfig

SPEC = load_space("cv_small")
DEFAULT_POOLS = ["stage0.layer0.spatial", "stage1.layer0.spatial", "stage2.layer0.spatial"]


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of the PNG at ``path``, after checking that it is a real, non-trivial PNG."""
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size > 10_000, f"{path}: only {path.stat().st_size} bytes"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def _space(mode: str, seed: int = 0) -> HybridCVSpace:
    torch.manual_seed(seed)
    space = HybridCVSpace(SPEC, mode)
    if mode == "hws":  # a non-identity T, so that the Add weights differ from the pool
        for pool in weight_pools(space).values():
            with torch.no_grad():
                pool.transform.alpha.copy_(torch.linspace(3.0, 0.5, pool.transform.segments))
    return space


@pytest.fixture(scope="module", params=["hws", "none"])
def space(request: pytest.FixtureRequest) -> HybridCVSpace:
    return _space(request.param)


# --- weights -----------------------------------------------------------------------------------------------------

def test_weight_pools_names_every_pool_in_network_order() -> None:
    pools = weight_pools(_space("naive"))
    assert list(pools)[:4] == ["stage0.layer0.reduce", "stage0.layer0.spatial", "stage0.layer0.expand",
                               "stage0.layer1.reduce"]
    assert "stage1.layer0.shortcut" in pools and "stage0.layer0.shortcut" not in pools  # only where shapes change
    assert len(pools) == 3 * 7 + 2  # 7 layer positions of 3 pools, 2 of them with a shortcut
    assert all(isinstance(p, SharedConvWeight) for p in pools.values())


def test_fits_are_the_sample_moments_of_the_weights_each_op_uses(space: HybridCVSpace) -> None:
    fits = weight_fits(space)
    assert list(fits) == DEFAULT_POOLS
    pools = weight_pools(space)
    for name, fit in fits.items():
        pool = pools[name]
        with torch.no_grad():
            conv, shift, add = (pool.weight(op).double().flatten() for op in ("conv", "shift", "add"))
        if space.mode == "hws":
            assert torch.equal(conv, pool.pool.double().flatten())  # Conv reads the pool as it is
            assert torch.allclose(add, pool.transform(pool.pool).double().flatten())  # Add reads T(W)
        else:
            assert torch.equal(conv, pool.own["conv"].double().flatten())  # separate weights per op
        assert fit["conv"]["mean"] == pytest.approx(conv.mean().item(), rel=1e-9, abs=1e-12)
        assert fit["conv"]["std"] == pytest.approx(conv.std(unbiased=False).item(), rel=1e-9)
        a = add.numpy()
        median = float(np.median(a))
        assert fit["add"] == pytest.approx({"loc": median, "scale": float(np.mean(np.abs(a - median)))}, rel=1e-9)
        assert fit["add"] != pytest.approx({"loc": fit["conv"]["mean"], "scale": fit["conv"]["std"]}, rel=1e-2)
        # Shift: signed powers of two with 5-bit exponents in [-14, 0]
        s = shift.numpy()
        exps = np.log2(np.abs(s[s != 0]))
        assert np.array_equal(exps, np.round(exps)) and exps.min() >= -14 and exps.max() <= 0
        assert fit["shift"]["levels"] == np.unique(s).size
        assert (fit["shift"]["min_exponent"], fit["shift"]["max_exponent"]) == (exps.min(), exps.max())
        assert fit["shift"]["zero_fraction"] == pytest.approx(float(np.mean(s == 0)))


def test_fits_recover_known_distributions() -> None:
    rng = np.random.default_rng(0)
    g = fit_gaussian(rng.normal(0.3, 2.0, 200_000))
    assert g["mean"] == pytest.approx(0.3, abs=0.02) and g["std"] == pytest.approx(2.0, rel=0.01)
    lp = fit_laplace(rng.laplace(-0.5, 0.7, 200_000))
    assert lp["loc"] == pytest.approx(-0.5, abs=0.01) and lp["scale"] == pytest.approx(0.7, rel=0.01)


def test_shape_stats_tell_laplacian_from_gaussian_whatever_the_scale() -> None:
    rng = np.random.default_rng(1)
    g, lp = shape_stats(rng.normal(0.3, 2.0, 20_000)), shape_stats(rng.laplace(-0.5, 0.01, 20_000))
    assert abs(g["excess_kurtosis"]) < 0.2 and lp["excess_kurtosis"] == pytest.approx(3.0, abs=0.5)
    assert abs(g["kl_gaussian"]) < 0.02 and abs(lp["kl_laplace"]) < 0.02  # ~0 for its own family
    assert g["kl_laplace"] > 0.04 and lp["kl_gaussian"] > 0.04  # the other family is measurably further


def test_plot_weight_histograms_writes_png(space: HybridCVSpace, tmp_path: Path) -> None:
    full = plot_weight_histograms(space, tmp_path / "w.png")
    assert full == tmp_path / "w.png"
    one = plot_weight_histograms(space, tmp_path / "sub" / "one.png", layers=["stage2.layer1"])  # bare: its 3x3
    (w_full, h_full), (w_one, h_one) = _png_size(full), _png_size(one)
    assert w_full == w_one and h_one < h_full / 2  # one row per selected pool, one column per op
    assert list(weight_fits(space, ["stage2.layer1", "stage1.layer0.shortcut"])) == ["stage2.layer1.spatial",
                                                                                      "stage1.layer0.shortcut"]


def test_weight_plot_rejects_unknown_layers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown weight pool 'stage9.layer0'.*stage0\.layer0\.reduce"):
        plot_weight_histograms(_space("naive"), tmp_path / "w.png", layers=["stage9.layer0"])
    assert not (tmp_path / "w.png").exists()


# --- subnet ------------------------------------------------------------------------------------------------------

def test_plot_subnet_writes_png_sized_by_depth(tmp_path: Path) -> None:
    shallow = baseline_arch(SPEC, "add", depths=[1, 1, 1])
    deep = dict(random_arch(SPEC, 0), **{"stage0.depth": 2, "stage1.depth": 2, "stage2.depth": 3})
    w_shallow, h_shallow = _png_size(plot_subnet(SPEC, shallow, tmp_path / "a.png"))
    w_deep, h_deep = _png_size(plot_subnet(SPEC, deep, tmp_path / "b.png", title="a 7-layer subnet"))
    assert w_deep > w_shallow and h_deep == h_shallow  # one column per layer, one row per resolution
    imagenet = load_space("cv_imagenet")
    _png_size(plot_subnet(imagenet, baseline_arch(imagenet, "attn", fallback="conv"), tmp_path / "c.png"))


@pytest.mark.parametrize("change", [{"stage0.layer0.op": "pool"}, {"stage2.depth": 4}, {"stage7.depth": 1}])
def test_plot_subnet_bad_arch_raises_validate_arch_error(tmp_path: Path, change: dict[str, Any]) -> None:
    arch = dict(baseline_arch(SPEC, "conv"), **change)
    with pytest.raises(ValueError) as expected:
        validate_arch(SPEC, arch)
    with pytest.raises(ValueError, match=re.escape(str(expected.value))):
        plot_subnet(SPEC, arch, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# --- pareto ------------------------------------------------------------------------------------------------------

def _rec(name: str, energy: float, acc: float) -> dict[str, Any]:
    return {"name": name, "energy_mJ": energy, "latency_ms": 2 * energy, "accuracy": acc}


def test_pareto_front_on_a_hand_made_example() -> None:
    recs = {n: _rec(n, e, a) for n, e, a in [
        ("a", 1.0, 0.70), ("b", 1.0, 0.65),  # b: same cost as a, less accurate
        ("c", 2.0, 0.70),                    # c: as accurate as a, costs more
        ("d", 2.0, 0.80), ("e", 3.0, 0.75),  # e: dominated by d
        ("f", 4.0, 0.90), ("g", 4.0, 0.90),  # g: duplicate of f, neither dominates the other
        ("h", 0.5, 0.60)]}
    order = ["f", "b", "d", "h", "e", "a", "g", "c"]
    front = pareto_front([recs[n] for n in order], "energy_mJ")
    assert [r["name"] for r in front] == ["h", "a", "d", "f", "g"]
    assert front[0] is recs["h"]  # the records themselves
    assert [r["name"] for r in pareto_front([recs[n] for n in order], "latency_ms", "accuracy")] == \
        ["h", "a", "d", "f", "g"]
    assert pareto_front([], "energy_mJ") == []
    # a loss is minimised: the same front on the negated metric
    losses = [{**recs[n], "valid_loss": -recs[n]["accuracy"]} for n in order]
    assert [r["name"] for r in pareto_front(losses, "energy_mJ", "valid_loss", maximize=False)] == \
        ["h", "a", "d", "f", "g"]


def test_pareto_errors_name_the_key_and_the_record(tmp_path: Path) -> None:
    recs = [_rec("a", 1.0, 0.7), {"energy_mJ": 2.0, "acc": 0.8}]
    with pytest.raises(ValueError, match=r"records\[1\]: missing key 'accuracy'"):
        pareto_front(recs, "energy_mJ")
    with pytest.raises(ValueError, match=r"records\[0\]\['energy_mJ'\]: got 'x'"):
        pareto_front([dict(_rec("a", 1.0, 0.7), energy_mJ="x")], "energy_mJ")
    with pytest.raises(ValueError, match=r"records\[1\]: missing key 'latency_ms'"):
        plot_pareto_pair([_rec("a", 1.0, 0.7), {"energy_mJ": 1.0, "accuracy": 0.5}], tmp_path)
    with pytest.raises(ValueError, match=r"baselines\['all_add'\]: missing key 'energy_mJ'"):
        plot_pareto([_rec("a", 1.0, 0.7)], tmp_path / "p.png", baselines={"all_add": {"accuracy": 0.5}})
    with pytest.raises(ValueError, match=r"best: missing key 'accuracy'"):
        plot_pareto([_rec("a", 1.0, 0.7)], tmp_path / "p.png", best={"energy_mJ": 1.0})
    assert not list(tmp_path.iterdir())


def _results() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    records = [_rec(f"r{i}", float(e), float(0.8 + 0.03 * np.log(e) - rng.uniform(0, 0.03)))
               for i, e in enumerate(rng.uniform(1, 10, 60))]
    baselines = {f"all_{op}": _rec(op, e, a) for op, e, a in
                 [("conv", 8.0, 0.86), ("attn", 9.5, 0.85), ("shift", 3.0, 0.82), ("add", 4.0, 0.83)]}
    return {"records": records, "baselines": baselines, "best": max(records, key=lambda r: r["accuracy"])}


def test_plot_pareto_pair_writes_energy_and_latency_pngs(tmp_path: Path) -> None:
    res = _results()
    paths = plot_pareto_pair(res["records"], tmp_path / "out", res["baselines"], res["best"])
    assert paths == [tmp_path / "out" / "pareto_energy.png", tmp_path / "out" / "pareto_latency.png"]
    for p in paths:
        _png_size(p)
    _png_size(plot_pareto(res["records"], tmp_path / "bare.png"))  # no baselines, no best


# --- command line ------------------------------------------------------------------------------------------------

def test_cli_plot_subnet_and_pareto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = random_arch(SPEC, 1)
    assert main(["plot", "subnet", "--space", "cv_small", "--arch", json.dumps(arch),
                 "--out", str(tmp_path / "inline.png")]) == 0
    (tmp_path / "arch.json").write_text(json.dumps({"arch": arch, "val_acc": 0.9}))  # an evaluated record
    assert main(["plot", "subnet", "--space", "cv_small", "--arch", str(tmp_path / "arch.json"),
                 "--out", str(tmp_path / "file.png")]) == 0
    assert _png_size(tmp_path / "inline.png") == _png_size(tmp_path / "file.png")
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert main(["plot", "pareto", "--results", str(tmp_path / "results.json"), "--out-dir",
                 str(tmp_path / "p")]) == 0
    (tmp_path / "list.json").write_text(json.dumps(_results()["records"]))  # a bare list of records
    assert main(["plot", "pareto", "--results", str(tmp_path / "list.json"), "--out-dir", str(tmp_path / "q")]) == 0
    for d in ("p", "q"):
        for p in ("pareto_energy.png", "pareto_latency.png"):
            _png_size(tmp_path / d / p)
    assert f"wrote {tmp_path / 'p' / 'pareto_latency.png'}" in capsys.readouterr().out


def test_cli_plot_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = dict(baseline_arch(SPEC, "conv"), **{"stage0.layer0.op": "pool"})
    assert main(["plot", "subnet", "--space", "cv_small", "--arch", json.dumps(bad), "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "arch['stage0.layer0.op']: got 'pool'" in capsys.readouterr().err
    (tmp_path / "r.json").write_text(json.dumps([{"energy_mJ": 1.0, "latency_ms": 1.0}]))
    assert main(["plot", "pareto", "--results", str(tmp_path / "r.json"), "--out-dir", str(tmp_path)]) == 2
    assert "records[0]: missing key 'accuracy'" in capsys.readouterr().err
    assert main(["plot", "subnet", "--space", "cv_small", "--arch", "{oops", "--out", str(tmp_path / "x.png")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["plot", "weights", "--supernet", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "w.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_cli_plot_weights_from_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    supernet = _space("hws", seed=3)
    config = dataclasses.asdict(SupernetConfig(space="cv_small", mode="hws"))
    state = {f"supernet.{k}": v for k, v in supernet.state_dict().items()}
    torch.save({"hyper_parameters": {"config": config}, "state_dict": state}, tmp_path / "last.ckpt")
    assert main(["plot", "weights", "--supernet", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "w.png"),
                 "--layers", "stage1.layer0.spatial,stage2.layer2"]) == 0
    _png_size(tmp_path / "w.png")
    out = capsys.readouterr().out
    fits = weight_fits(supernet, ["stage1.layer0.spatial", "stage2.layer2"])  # the checkpoint's weights, not fresh ones
    for name, fit in fits.items():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert f"mean={fit['conv']['mean']:.4g}" in line and f"scale={fit['add']['scale']:.4g}" in line
