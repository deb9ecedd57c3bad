"""Search-space specs: the shipped YAML files, their validation errors, and the architecture dicts."""
from __future__ import annotations

import copy
import importlib.resources
import itertools
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from nni_shiftadd.config import ConfigError
from nni_shiftadd.resources import list_resources, resource
from nni_shiftadd.space import (OPS, SpaceSpec, arch_gates, arch_space, baseline_arch, canonical_arch,
                                count_subnets, depth_label, layer_plan, load_space, op_label, random_arch,
                                shipped_spaces, valid_depths, validate_arch)


@pytest.fixture(scope="module")
def imagenet() -> SpaceSpec:
    return load_space("cv_imagenet")


@pytest.fixture(scope="module")
def small() -> SpaceSpec:
    return load_space("cv_small")


def shipped_dict(name: str) -> dict[str, Any]:
    return yaml.safe_load(resource("search_spaces", f"{name}.yaml").read_text())


def load_space_dict(data: dict[str, Any], folder: Path) -> SpaceSpec:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_space(str(path))


# --- shipped files ---------------------------------------------------------------------------------------------

def test_shipped_spaces_are_package_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"cv_imagenet.yaml", "cv_small.yaml"} <= set(list_resources("search_spaces"))
    assert {"cv_imagenet", "cv_small"} <= set(shipped_spaces())
    files = importlib.resources.files("nni_shiftadd.search_spaces")
    assert files.joinpath("cv_small.yaml").is_file()
    monkeypatch.chdir(tmp_path)  # nothing is found relative to the working directory
    assert load_space("cv_small").name == "cv_small"
    assert load_space("cv_imagenet.yaml").name == "cv_imagenet"


def test_cv_imagenet_is_table_2(imagenet: SpaceSpec) -> None:
    assert (imagenet.input.channels, imagenet.input.size, imagenet.num_classes) == (3, 224, 1000)
    assert [(s.resolution, s.width) for s in imagenet.stages] == [(56, 128), (28, 256), (14, 512), (7, 1024)]
    assert [list(s.depths) for s in imagenet.stages] == [[1, 2, 3, 4], [1, 2, 3, 4], [3, 4, 5, 6, 7],
                                                         [4, 5, 6, 7, 8, 9]]
    assert [s.attn_allowed for s in imagenet.stages] == [False, False, True, True]
    assert all(set(s.blocks) == set(OPS) - ({"attn"} if s.resolution > 14 else set()) for s in imagenet.stages)
    assert imagenet.total_depth == 16


def test_cv_small_fits_fashion_mnist(small: SpaceSpec) -> None:
    assert (small.input.channels, small.input.size, small.num_classes) == (1, 28, 10)
    assert [s.resolution for s in small.stages] == [28, 14, 7]
    assert all(set(s.blocks) == set(OPS) for s in small.stages)


def _chain_count(spec: SpaceSpec) -> int:
    """Independent count of the paper's reading: a chain of ``total_depth`` layers, the first at the first
    stage's resolution, each later one keeping the resolution or halving it until the smallest, each picking a
    block type offered at its resolution; the number of layers at each resolution within the stage's depths."""
    n_stages, length = len(spec.stages), spec.total_depth
    ways: dict[tuple[int, tuple[int, ...]], int] = {(0, (1,) + (0,) * (n_stages - 1)): len(spec.stages[0].blocks)}
    for _ in range(length - 1):
        nxt: dict[tuple[int, tuple[int, ...]], int] = {}
        for (s, counts), w in ways.items():
            for t in {s, min(s + 1, n_stages - 1)}:  # keep, or halve until the smallest
                c = list(counts)
                c[t] += 1
                key = (t, tuple(c))
                nxt[key] = nxt.get(key, 0) + w * len(spec.stages[t].blocks)
        ways = nxt
    return sum(w for (_, counts), w in ways.items()
               if all(c in st.depths for c, st in zip(counts, spec.stages)))


def test_cv_imagenet_subnet_count(imagenet: SpaceSpec, tmp_path: Path) -> None:
    n = count_subnets(imagenet)
    patterns = len(valid_depths(imagenet))
    print(f"\ncv_imagenet: {n:,} subnets ({n:.2e}) over {patterns} resolution patterns "
          f"({n / patterns:.2e} block-type assignments per pattern)")
    assert n == _chain_count(imagenet) == 75_984_666_624
    # the paper's "about 10^9" is the block-type choices of one resolution pattern; with the patterns, ~10^11
    assert 1e8 <= n / patterns <= 1e10
    assert 1e10 <= n <= 1e11
    data = shipped_dict("cv_imagenet")
    data.update(total_depth=None, stages=[{**s, "default_depth": None} for s in data["stages"]])
    unconstrained = count_subnets(load_space_dict(data, tmp_path))
    print(f"cv_imagenet without the 16-layer total: {unconstrained:.2e} subnets")
    assert unconstrained > n


def test_cv_small_subnet_count(small: SpaceSpec) -> None:
    n = count_subnets(small)
    print(f"\ncv_small: {n:,} subnets")
    distinct = set()
    for depths in valid_depths(small):
        layers = [(i, j) for i, d in enumerate(depths) for j in range(d)]
        for ops in itertools.product(*(small.stages[i].blocks for i, _ in layers)):
            arch = {depth_label(i): d for i, d in enumerate(depths)}
            arch.update({op_label(i, j): small.stages[i].blocks[-1] for i, s in enumerate(small.stages)
                         for j in range(s.max_depth)})
            arch.update({op_label(i, j): op for (i, j), op in zip(layers, ops)})
            distinct.add(tuple(canonical_arch(small, arch).items()))
    assert n == len(distinct) == 33_600


# --- bad files -------------------------------------------------------------------------------------------------

def _edit(name: str, fn: Any) -> dict[str, Any]:
    data = copy.deepcopy(shipped_dict(name))
    fn(data)
    return data


BAD = [
    ("unknown field", lambda d: d["stages"][0].update(colour="red"),
     r"unknown field 'stages\[0\]\.colour'; allowed fields are \[.*'blocks'.*'width'\]"),
    ("unknown top-level field", lambda d: d.update(stagez=[]), r"unknown field 'stagez'; allowed fields are \["),
    ("depth not int", lambda d: d["stages"][1].update(depths=[1, "two"]),
     r"field 'stages\[1\]\.depths\[1\]': got 'two'; expected int"),
    ("block type mul", lambda d: d["stages"][2].update(blocks=["conv", "mul"]),
     r"field 'stages\[2\]\.blocks\[1\]': got 'mul'; expected one of 'attn', 'conv', 'shift', 'add'"),
    ("empty stages", lambda d: d.update(stages=[]), r"field 'stages': got \[\]; expected a list of at least one"),
    ("negative width", lambda d: d["stages"][0].update(width=-16),
     r"field 'stages\[0\]\.width': got -16; expected an int > 0"),
    ("stage not a mapping", lambda d: d.update(stages=[5]),
     r"field 'stages\[0\]': got 5; expected a mapping of StageSpec fields"),
    ("missing field", lambda d: d["stages"][0].pop("width"),
     r"missing field 'stages\[0\]\.width' \(int\); required fields are \["),
    ("resolution not halved", lambda d: d["stages"][1].update(resolution=12),
     r"field 'stages\[1\]\.resolution': got 12; expected 14, half of stages\[0\]\.resolution"),
    ("depth zero", lambda d: d["stages"][0].update(depths=[0, 1]),
     r"field 'stages\[0\]\.depths\[0\]': got 0; expected an int >= 1"),
    ("default depth not offered", lambda d: d["stages"][0].update(default_depth=5),
     r"field 'stages\[0\]\.default_depth': got 5; expected null or one of \[1, 2\]"),
    ("heads do not divide width", lambda d: d["stages"][2].update(heads=5),
     r"field 'stages\[2\]\.heads': got 5; expected a divisor of the width 64"),
    ("input size wrong type", lambda d: d["input"].update(size="28px"),
     r"field 'input\.size': got '28px'; expected int"),
    ("unreachable total depth", lambda d: d.update(total_depth=99),
     r"field 'total_depth': got 99; expected null or a sum the stage depths can reach: \[3, 4, 5, 6, 7\]"),
    ("pool not offered", lambda d: d["classifier"].update(pool="min"),
     r"field 'classifier\.pool': got 'min'; expected one of 'avg', 'max'"),
]


@pytest.mark.parametrize("edit, message", [(e, m) for _, e, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_space_names_file_field_and_allowed(tmp_path: Path, edit: Any, message: str) -> None:
    data = _edit("cv_small", edit)
    with pytest.raises(ConfigError, match=message) as info:
        load_space_dict(data, tmp_path)
    assert str(info.value).startswith(str(tmp_path / "space.yaml") + ": ")


def test_defaults_must_reach_total_depth(tmp_path: Path) -> None:
    data = _edit("cv_imagenet", lambda d: d["stages"][3].update(default_depth=9))
    with pytest.raises(ConfigError, match=r"field 'stages\[\*\]\.default_depth': got \[2, 4, 5, 9\]; expected "
                                          r"baseline depths that add up to total_depth 16"):
        load_space_dict(data, tmp_path)


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": not valid YAML"):
        load_space(str(path))


def test_unknown_space_lists_shipped(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cv_huge: no such search-space file.*shipped: \[.*'cv_small'"):
        load_space("cv_huge")
    with pytest.raises(ConfigError, match="no such search-space file"):
        load_space(tmp_path / "missing.yaml")


# --- architectures ---------------------------------------------------------------------------------------------

def test_arch_space_labels(imagenet: SpaceSpec, small: SpaceSpec) -> None:
    space = arch_space(imagenet)
    assert len(space) == 4 + 4 + 4 + 7 + 9
    assert space["stage0.depth"] == [1, 2, 3, 4]
    assert space["stage0.layer3.op"] == ["conv", "shift", "add"]
    assert space["stage3.layer8.op"] == ["conv", "shift", "add", "attn"]
    assert set(arch_gates(imagenet)) == {k for k in space if k.endswith(".op")}
    assert arch_gates(imagenet)["stage2.layer6.op"] == ("stage2.depth", 6)
    assert list(arch_space(small)) == ["stage0.depth", "stage0.layer0.op", "stage0.layer1.op", "stage1.depth",
                                       "stage1.layer0.op", "stage1.layer1.op", "stage2.depth", "stage2.layer0.op",
                                       "stage2.layer1.op", "stage2.layer2.op"]


@pytest.mark.parametrize("name", ["cv_imagenet", "cv_small"])
def test_random_arch_matches_space(name: str) -> None:
    spec = load_space(name)
    space = arch_space(spec)
    rng = random.Random(0)
    seen_depths = set()
    for _ in range(200):
        arch = random_arch(spec, rng)
        assert list(arch) == list(space)
        assert all(arch[k] in v for k, v in space.items())
        validate_arch(spec, arch)
        seen_depths.add(tuple(arch[depth_label(i)] for i in range(len(spec.stages))))
    assert seen_depths <= set(valid_depths(spec)) and len(seen_depths) > 1
    assert random_arch(spec, 3) == random_arch(spec, 3)
    validate_arch(spec, random_arch(spec, np.random.default_rng(0)))


def test_validate_arch_errors(imagenet: SpaceSpec) -> None:
    arch = baseline_arch(imagenet, "conv")
    with pytest.raises(ValueError, match=r"missing key 'stage1\.layer2\.op'; expected a value out of "
                                         r"\['conv', 'shift', 'add'\]"):
        validate_arch(imagenet, {k: v for k, v in arch.items() if k != "stage1.layer2.op"})
    with pytest.raises(ValueError, match=r"unknown key 'stage0\.layer4\.op' \(value 'conv'\); space 'cv_imagenet' "
                                         r"has the keys \['stage0\.depth'"):
        validate_arch(imagenet, {**arch, "stage0.layer4.op": "conv"})
    with pytest.raises(ValueError, match=r"arch\['stage0\.layer0\.op'\]: got 'attn'; expected one of "
                                         r"\['conv', 'shift', 'add'\]"):
        validate_arch(imagenet, {**arch, "stage0.layer0.op": "attn"})
    with pytest.raises(ValueError, match=r"arch\['stage2\.depth'\]: got 8; expected one of \[3, 4, 5, 6, 7\]"):
        validate_arch(imagenet, {**arch, "stage2.depth": 8})
    with pytest.raises(ValueError, match=r"arch\['stage0\.depth'\]: got True"):
        validate_arch(imagenet, {**arch, "stage0.depth": True})
    with pytest.raises(ValueError, match=r"add up to 17; space 'cv_imagenet' expects total_depth 16"):
        validate_arch(imagenet, {**arch, "stage0.depth": 3})
    with pytest.raises(TypeError):
        validate_arch(imagenet, [("stage0.depth", 1)])  # type: ignore[arg-type]


def test_canonical_arch(small: SpaceSpec) -> None:
    a = {**baseline_arch(small, "add"), "stage0.depth": 1, "stage0.layer1.op": "attn"}
    b = {**a, "stage0.layer1.op": "shift"}  # differs only in an inactive layer
    c = {**a, "stage0.layer0.op": "shift"}  # differs in an active layer
    assert a != b and canonical_arch(small, a) == canonical_arch(small, b)
    assert canonical_arch(small, a) != canonical_arch(small, c)
    assert canonical_arch(small, canonical_arch(small, a)) == canonical_arch(small, a)
    assert canonical_arch(small, a)["stage0.layer1.op"] == small.stages[0].blocks[0]
    np_arch = {k: (np.int64(v) if isinstance(v, int) else v) for k, v in a.items()}
    assert canonical_arch(small, np_arch) == canonical_arch(small, a)
    assert all(type(v) in (int, str) for v in canonical_arch(small, np_arch).values())


@pytest.mark.parametrize("op", OPS)
def test_baselines_are_archs(small: SpaceSpec, op: str) -> None:
    arch = baseline_arch(small, op)
    validate_arch(small, arch)
    plan = layer_plan(small, arch)
    assert [p.op for p in plan] == [op] * sum(s.max_depth for s in small.stages)


def test_cv_imagenet_baselines(imagenet: SpaceSpec) -> None:
    for op in ("conv", "shift", "add"):
        arch = baseline_arch(imagenet, op)
        assert [arch[depth_label(i)] for i in range(4)] == [2, 4, 5, 5]
        assert {p.op for p in layer_plan(imagenet, arch)} == {op}
    with pytest.raises(ValueError, match=r"baseline 'attn': stage 0 \(56x56\) offers only \['conv', 'shift', "
                                         r"'add'\]; pass fallback="):
        baseline_arch(imagenet, "attn")
    hybrid = layer_plan(imagenet, baseline_arch(imagenet, "attn", fallback="conv"))
    assert [p.op for p in hybrid] == ["conv"] * 6 + ["attn"] * 10
    with pytest.raises(ValueError, match=r"op: got 'mul'"):
        baseline_arch(imagenet, "mul")


def test_layer_plan_follows_stay_or_halve(imagenet: SpaceSpec) -> None:
    arch = random_arch(imagenet, 7)
    plan = layer_plan(imagenet, arch)
    assert len(plan) == imagenet.total_depth
    assert plan[0].in_width == imagenet.stem.channels and plan[0].in_resolution == 56
    for prev, layer in zip(plan, plan[1:]):
        assert layer.in_resolution == prev.resolution and layer.in_width == prev.width
        assert layer.resolution in (prev.resolution, prev.resolution // 2)
        assert layer.downsample == (layer.resolution != prev.resolution) == (layer.index == 0)
    assert plan[-1].resolution == 7


def test_space_plugs_into_the_latency_encoder(small: SpaceSpec) -> None:
    from nni_shiftadd.cost.encoding import ArchEncoder

    enc = ArchEncoder(arch_space(small), gates=arch_gates(small))
    a = {**baseline_arch(small, "conv"), "stage0.depth": 1, "stage0.layer1.op": "attn"}
    assert enc.encode(a).tolist() == enc.encode(canonical_arch(small, a)).tolist()
