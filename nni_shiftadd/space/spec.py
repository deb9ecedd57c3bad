"""CV hybrid search spaces as data: a frozen-dataclass schema loaded from YAML, the flat NNI-style architecture
dicts that sample it, and the operations on them (validation, canonical form, counting, sampling, baselines).

Reading of the paper (ShiftAddNAS, Sec. 3.1 "Supernet for CV tasks", Table 2, Fig. 2(b)):

* The supernet is a chain of layers; each layer *stays* at the resolution of the layer before it or *halves* it,
  "until reaching the smallest resolution". Table 2 names four resolutions with fixed widths
  (56^2 x 128, 28^2 x 256, 14^2 x 512, 7^2 x 1024) and, for each, how many blocks run at it.
  With a chain of stay/halve layers, the number of blocks at each resolution *is* the stay/halve pattern: a layer
  halves exactly when it is the first layer of a stage after the first. So the per-layer resolution choice is
  expressed by the per-stage depth labels, not by a second, redundant per-layer label (which would make equal
  networks look different to the search). :func:`layer_plan` gives the per-layer view (``downsample`` is the
  paper's "halve").
* The authors' supernet code (BossNAS HyTra) has 4 x 4 = 16 layer positions, and their released searched models
  have 16 layers ([1, 1, 5, 9] and [2, 4, 5, 5] blocks per resolution): Table 2's depth ranges are bounds on a
  16-layer chain. ``total_depth: 16`` in ``cv_imagenet.yaml`` encodes that; ``total_depth: null`` gives the
  unconstrained reading (every depth combination of Table 2).
* Block types per layer: Attn, Conv, Shift, Add; Attn only at 14^2 and 7^2 (as the authors' code and the SPEC).

Counted that way, ``cv_imagenet`` has 75,984,666,624 (7.6e10) subnets; without the 16-layer total it would have
1.1e14. The paper's "about 10^9" matches neither exactly: it is the number of block-type assignments of one
16-layer resolution pattern (7.6e10 / 66 patterns = 1.15e9 on average), so the paper appears to leave the
resolution pattern out of its count.

Architecture dicts are flat ``{label: value}`` mappings, as an NNI sample:

* ``stage{i}.depth``: number of active layers of stage ``i`` (one of ``stages[i].depths``);
* ``stage{i}.layer{j}.op``: block type of layer ``j`` of stage ``i`` (one of ``stages[i].blocks``), for every
  ``j < max(stages[i].depths)``; layers ``j >= stage{i}.depth`` are inactive and ignored.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .. import resources
from ..config import ConfigError, load_yaml_text, parse_yaml
from ..vocabulary import BLOCKS, REFERENCE_BLOCK, block_type
from .kinds import DEFAULT_KIND, bad_field, register_space_kind, space_class
from .labels import check_labels

OPS: tuple[str, ...] = BLOCKS
BlockType = str  # a name of nni_shiftadd.vocabulary.BLOCK_TYPES


@dataclass(frozen=True)
class InputSpec:
    """The network input.

    Attributes:
        channels: image channels (3 for RGB, 1 for grey-scale).
        size: height = width of the square input image, in pixels.
    """

    channels: int
    size: int


@dataclass(frozen=True)
class StemSpec:
    """The fixed (not searched) stem: ``conv(kernel x kernel, stride) -> norm -> act``, then a 3x3/2 max-pool
    if ``pool``. Its output has ``channels`` channels at ``stages[0].resolution``.

    Attributes:
        channels: output channels of the stem convolution.
        kernel: kernel size of the stem convolution (padding ``kernel // 2``).
        stride: stride of the stem convolution.
        pool: whether a 3x3 max-pool of stride 2 follows (ResNet style).
    """

    channels: int
    kernel: int = 3
    stride: int = 1
    pool: bool = False

    def output_size(self, size: int) -> int:
        """Spatial size after the stem for an input of ``size`` (each stride-2 step rounds up, as padded convs)."""
        size = math.ceil(size / self.stride)
        return math.ceil(size / 2) if self.pool else size


@dataclass(frozen=True)
class StageSpec:
    """One resolution of the network: a run of layers at the same spatial size and width.

    Attributes:
        width: output channels of every block of the stage (Table 2: 128, 256, 512, 1024).
        resolution: height = width of the stage's feature maps, in pixels. The first stage runs at the stem's
            output size; every later stage at half the previous one (rounded up): a layer either keeps the
            resolution of the layer before it or halves it, and the first layer of a stage is the one that halves.
        depths: the searchable numbers of layers of the stage (each >= 1, so no resolution is skipped).
        blocks: the block types a layer of this stage may take, a subset of ``attn``, ``conv``, ``shift``,
            ``add``. The first one is the canonical value of inactive layers.
        default_depth: the depth of the fixed baseline architectures (:func:`baseline_arch`); ``null`` means the
            largest of ``depths``.
        bottleneck: channel reduction of the Conv/Shift/Add bottleneck blocks (1x1, 3x3, 1x1): the 3x3 runs on
            ``width // bottleneck`` channels (ResNet: 4).
        mlp_ratio: hidden width of the Attn block's two-layer MLP, as a multiple of ``width``.
        heads: attention heads of the Attn block; attention runs on ``width`` channels, ``width // heads`` each.
    """

    width: int
    resolution: int
    depths: tuple[int, ...]
    blocks: tuple[BlockType, ...]
    default_depth: int | None = None
    bottleneck: int = 4
    mlp_ratio: float = 4.0
    heads: int = 1

    @property
    def attn_allowed(self) -> bool:
        """Whether layers of this stage may be Attn blocks."""
        return any(block_type(b).family == "attention" for b in self.blocks)

    @property
    def max_depth(self) -> int:
        """The number of layer positions (labels) of the stage."""
        return max(self.depths)

    @property
    def baseline_depth(self) -> int:
        """``default_depth``, or the largest depth when it is unset."""
        return self.max_depth if self.default_depth is None else self.default_depth


@dataclass(frozen=True)
class ClassifierSpec:
    """The head after the last stage: global pooling, optional dropout, one linear layer to ``num_classes``.

    Attributes:
        pool: global pooling, ``avg`` or ``max``.
        dropout: dropout probability before the linear layer, in [0, 1).
    """

    pool: Literal["avg", "max"] = "avg"
    dropout: float = 0.0


@dataclass(frozen=True)
class SpaceSpec:
    """A CV hybrid search space (paper Table 2 style): a stem, stages of searchable depth whose layers each pick a
    block type, and a classifier.

    Attributes:
        name: short name of the space.
        input: the input image (:class:`InputSpec`).
        num_classes: classes of the classifier (>= 2).
        stem: the fixed stem (:class:`StemSpec`).
        stages: the stages (:class:`StageSpec`), from the highest resolution to the lowest.
        classifier: the head (:class:`ClassifierSpec`).
        total_depth: if set, the stage depths of every architecture must add up to it (a chain of this many
            layers; ``cv_imagenet``: 16, as the authors' supernet); ``null``: any combination of depths.
        description: free text.
    """

    name: str
    input: InputSpec
    num_classes: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    classifier: ClassifierSpec = ClassifierSpec()
    total_depth: int | None = None
    description: str = ""
    kind: Literal["image_classification"] = "image_classification"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field path, the bad value and what is allowed."""
        _positive("input.channels", self.input.channels)
        _positive("input.size", self.input.size)
        if not self.name:
            raise _bad("name", self.name, "a non-empty name")
        if self.num_classes < 2:
            raise _bad("num_classes", self.num_classes, "an int >= 2")
        _positive("stem.channels", self.stem.channels)
        _positive("stem.kernel", self.stem.kernel)
        _positive("stem.stride", self.stem.stride)
        if not 0 <= self.classifier.dropout < 1:
            raise _bad("classifier.dropout", self.classifier.dropout, "a float in [0, 1)")
        if not self.stages:
            raise _bad("stages", list(self.stages), "a list of at least one stage")
        expected = self.stem.output_size(self.input.size)
        for i, st in enumerate(self.stages):
            at = f"stages[{i}]"
            _positive(f"{at}.width", st.width)
            if st.resolution != expected:
                why = (f"the stem's output for a {self.input.size}x{self.input.size} input" if i == 0 else
                       f"half of stages[{i - 1}].resolution (a layer keeps the resolution or halves it)")
                raise _bad(f"{at}.resolution", st.resolution, f"{expected}, {why}")
            expected = math.ceil(st.resolution / 2)
            if not st.depths:
                raise _bad(f"{at}.depths", list(st.depths), "a non-empty list of ints >= 1")
            for k, d in enumerate(st.depths):
                if d < 1:
                    raise _bad(f"{at}.depths[{k}]", d, "an int >= 1 (every resolution keeps at least one layer)")
            if len(set(st.depths)) != len(st.depths):
                raise _bad(f"{at}.depths", list(st.depths), "distinct ints")
            for k, b in enumerate(st.blocks):
                if b not in OPS:
                    raise _bad(f"{at}.blocks[{k}]", b, "one of " + ", ".join(repr(op) for op in OPS))
            if not st.blocks:
                raise _bad(f"{at}.blocks", list(st.blocks), f"a non-empty subset of {list(OPS)}")
            if len(set(st.blocks)) != len(st.blocks):
                raise _bad(f"{at}.blocks", list(st.blocks), f"distinct block types out of {list(OPS)}")
            if st.default_depth is not None and st.default_depth not in st.depths:
                raise _bad(f"{at}.default_depth", st.default_depth, f"null or one of {list(st.depths)}")
            _positive(f"{at}.bottleneck", st.bottleneck)
            if st.width % st.bottleneck:
                raise _bad(f"{at}.bottleneck", st.bottleneck, f"a divisor of the width {st.width}")
            if st.mlp_ratio <= 0:
                raise _bad(f"{at}.mlp_ratio", st.mlp_ratio, "a number > 0")
            _positive(f"{at}.heads", st.heads)
            if st.width % st.heads:
                raise _bad(f"{at}.heads", st.heads, f"a divisor of the width {st.width}")
        if self.total_depth is not None:
            sums = sorted({sum(c) for c in itertools.product(*(st.depths for st in self.stages))})
            if self.total_depth not in sums:
                raise _bad("total_depth", self.total_depth, f"null or a sum the stage depths can reach: {sums}")
            defaults = [st.baseline_depth for st in self.stages]
            if sum(defaults) != self.total_depth:
                raise _bad("stages[*].default_depth", defaults,
                           f"baseline depths that add up to total_depth {self.total_depth}")

    # the SearchSpaceSpec protocol (nni_shiftadd.space.kinds), implemented below
    def arch_space(self) -> dict[str, list[Any]]:
        return _image_arch_space(self)

    def arch_gates(self) -> dict[str, tuple[str, int]]:
        return _image_arch_gates(self)

    def validate_arch(self, arch: Mapping[str, Any]) -> None:
        _image_validate_arch(self, arch)

    def canonical_arch(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        return _image_canonical_arch(self, arch)

    def structurally_valid(self, arch: Mapping[str, Any]) -> bool:
        return _image_structurally_valid(self, arch)

    def random_arch(self, rng: random.Random | int | None = None) -> dict[str, Any]:
        return _image_random_arch(self, rng)

    def baseline_arch(self, op: str, **options: Any) -> dict[str, Any]:
        return _image_baseline_arch(self, op, **options)

    def named_baselines(self, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
        return _image_named_baselines(self, ops)

    def restrict_blocks(self, blocks: Sequence[str]) -> SpaceSpec:
        return _image_restrict_blocks(self, blocks)

    def count_subnets(self) -> int:
        return _image_count_subnets(self)


register_space_kind("image_classification", SpaceSpec)
_bad = bad_field


def _positive(path: str, value: int) -> None:
    if value < 1:
        raise _bad(path, value, "an int > 0")


# --- loading --------------------------------------------------------------------------------------------------


def shipped_spaces() -> list[str]:
    """Names of the search spaces that ship with the package (``load_space`` accepts them)."""
    return [Path(n).stem for n in resources.list_resources("search_spaces")]


def load_space(name_or_path: str | os.PathLike[str]) -> Any:
    """Load a search space: a shipped name (``"cv_imagenet"``, ``"cv_small"``, ``"nlp_wmt14"``, ``"nlp_small"``,
    with or without ``.yaml``), found through ``importlib.resources``, or the path of a YAML file (use
    ``./name.yaml`` for a local file whose name is also a shipped one). Its ``kind`` picks the schema: a CV
    :class:`SpaceSpec` (``image_classification``, the default) or a
    :class:`~nni_shiftadd.space.nlp_spec.TranslationSpaceSpec` (``translation``). Raises ``ConfigError`` naming the
    file, the field path, the value and what is allowed."""
    text = os.fspath(name_or_path)
    source: str | None = None
    if isinstance(name_or_path, str) and "/" not in text and os.sep not in text:
        stem = text[:-5] if text.endswith(".yaml") else text
        if stem in shipped_spaces():
            res = resources.resource("search_spaces", f"{stem}.yaml")
            source, content = str(res), res.read_text(encoding="utf-8")
    if source is None:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"{text}: no such search-space file, nor a shipped search space; "
                              f"shipped: {shipped_spaces()}")
        source, content = str(path), path.read_text(encoding="utf-8")
    return parse_yaml(_schema(content, source), content, source)


def _schema(content: str, source: str) -> type:
    """The spec class a search-space YAML's ``kind`` names (:data:`~nni_shiftadd.space.kinds.SPACE_KINDS`)."""
    try:
        data = load_yaml_text(content)
    except Exception:  # noqa: BLE001 - parse_yaml reports the syntax error with the file name
        return SpaceSpec
    kind = data.get("kind", DEFAULT_KIND) if isinstance(data, dict) else DEFAULT_KIND
    return space_class(kind, source)


# --- architectures --------------------------------------------------------------------------------------------

def depth_label(stage: int) -> str:
    """The label of stage ``stage``'s depth."""
    return f"stage{stage}.depth"


def op_label(stage: int, layer: int) -> str:
    """The label of the block type of layer ``layer`` of stage ``stage``."""
    return f"stage{stage}.layer{layer}.op"


def _image_arch_space(spec: SpaceSpec) -> dict[str, list[Any]]:
    """Every label of the space and its choices, in network order: what an NNI model space exposes (one
    ``nni.choice`` per label) and what the latency predictor's ``ArchEncoder`` takes as ``space``."""
    space: dict[str, list[Any]] = {}
    for i, st in enumerate(spec.stages):
        space[depth_label(i)] = list(st.depths)
        for j in range(st.max_depth):
            space[op_label(i, j)] = list(st.blocks)
    return space


def _image_arch_gates(spec: SpaceSpec) -> dict[str, tuple[str, int]]:
    """``{op label: (depth label, layer index)}``: the layer is active when ``arch[depth label] > index``
    (the ``gates`` argument of ``ArchEncoder``)."""
    return {op_label(i, j): (depth_label(i), j) for i, st in enumerate(spec.stages) for j in range(st.max_depth)}


def valid_depths(spec: SpaceSpec) -> list[tuple[int, ...]]:
    """Every allowed combination of stage depths (all of them, or those adding up to ``total_depth``)."""
    combos = itertools.product(*(st.depths for st in spec.stages))
    return [c for c in combos if spec.total_depth is None or sum(c) == spec.total_depth]


def _matches(value: Any, choice: Any) -> bool:
    if isinstance(choice, str):
        return isinstance(value, str) and value == choice
    return isinstance(value, Integral) and not isinstance(value, bool) and value == choice


def _image_validate_arch(spec: SpaceSpec, arch: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a missing label, an unknown label, a value outside the label's choices, or stage
    depths that do not add up to ``total_depth``; the message names the label, the value and what is allowed."""
    check_labels(arch_space(spec), arch, spec.name, _matches)
    if spec.total_depth is not None:
        depths = {depth_label(i): int(arch[depth_label(i)]) for i in range(len(spec.stages))}
        if sum(depths.values()) != spec.total_depth:
            raise ValueError(f"arch: stage depths {depths} add up to {sum(depths.values())}; space {spec.name!r} "
                             f"expects total_depth {spec.total_depth}")


def _image_canonical_arch(spec: SpaceSpec, arch: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``arch`` in label order with plain Python values and every inactive layer set to its
    stage's first block type, so that architectures building the same network compare equal."""
    validate_arch(spec, arch)
    out: dict[str, Any] = {}
    for i, st in enumerate(spec.stages):
        depth = int(arch[depth_label(i)])
        out[depth_label(i)] = depth
        for j in range(st.max_depth):
            out[op_label(i, j)] = str(arch[op_label(i, j)]) if j < depth else st.blocks[0]
    return out


def _image_count_subnets(spec: SpaceSpec) -> int:
    """The number of distinct networks (canonical architectures): the sum over the allowed depth combinations
    of the product of the block-type choices of their active layers."""
    return sum(math.prod(len(st.blocks) ** d for st, d in zip(spec.stages, depths)) for depths in valid_depths(spec))


def _choice(rng: Any, seq: Sequence[Any]) -> Any:
    if hasattr(rng, "integers"):  # numpy.random.Generator
        return seq[int(rng.integers(len(seq)))]
    return rng.choice(seq)


def _image_random_arch(spec: SpaceSpec, rng: random.Random | int | None = None) -> dict[str, Any]:
    """A uniformly random architecture holding every label (inactive layers get random values too, as an NNI
    sample): depths uniform over :func:`valid_depths`, each block type uniform over its stage's choices.
    ``rng``: a ``random.Random``, a ``numpy.random.Generator``, a seed, or ``None`` for a fresh one."""
    if rng is None or isinstance(rng, Integral):
        rng = random.Random(rng)
    depths = _choice(rng, valid_depths(spec))
    arch: dict[str, Any] = {}
    for i, st in enumerate(spec.stages):
        arch[depth_label(i)] = int(depths[i])
        for j in range(st.max_depth):
            arch[op_label(i, j)] = str(_choice(rng, st.blocks))
    return arch


def _image_baseline_arch(spec: SpaceSpec, op: str, *, fallback: str | None = None,
                  depths: Sequence[int] | None = None) -> dict[str, Any]:
    """The homogeneous baseline with every layer of type ``op`` (all-Conv, all-Attn, all-Shift, all-Add), at
    ``depths`` (default: each stage's ``baseline_depth``), in canonical form.

    A stage that does not offer ``op`` (``cv_imagenet`` has no Attn at 56^2 and 28^2) raises ``ValueError``
    unless ``fallback`` names a block type it does offer; ``baseline_arch(spec, "attn", fallback="conv")`` is then
    the BoTNet-style network with Conv where Attn is not allowed."""
    if op not in OPS:
        raise ValueError(f"op: got {op!r}; expected one of {list(OPS)}")
    if fallback is not None and fallback not in OPS:
        raise ValueError(f"fallback: got {fallback!r}; expected None or one of {list(OPS)}")
    depths = [st.baseline_depth for st in spec.stages] if depths is None else list(depths)
    if len(depths) != len(spec.stages):
        raise ValueError(f"depths: got {depths}; expected one depth per stage ({len(spec.stages)})")
    arch: dict[str, Any] = {}
    for i, (st, depth) in enumerate(zip(spec.stages, depths)):
        use = op if op in st.blocks else fallback
        if use not in st.blocks:
            res = f"{st.resolution}x{st.resolution}"
            raise ValueError(f"baseline {op!r}: stage {i} ({res}) offers only {list(st.blocks)}"
                             + ("" if fallback is None else f", not the fallback {fallback!r}")
                             + "; pass fallback= one of those")
        arch[depth_label(i)] = depth
        arch.update({op_label(i, j): use for j in range(st.max_depth)})
    return canonical_arch(spec, arch)


def _image_structurally_valid(spec: SpaceSpec, arch: Mapping[str, Any]) -> bool:
    """Whether ``arch``'s labels (each within its choices) combine into a network of the space: stage depths that
    add up to ``total_depth``. What evolution's mutation and crossover must respect."""
    depths = tuple(int(arch[depth_label(i)]) for i in range(len(spec.stages)))
    return spec.total_depth is None or sum(depths) == spec.total_depth


def _image_named_baselines(spec: SpaceSpec, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{"all_<op>": arch}``: the homogeneous references of a search (Conv where a stage lacks ``op``)."""
    return {f"all_{op}": baseline_arch(spec, op, fallback=REFERENCE_BLOCK) for op in ops}


def _image_restrict_blocks(spec: SpaceSpec, blocks: Sequence[str]) -> SpaceSpec:
    """The same space with every layer's block types limited to ``blocks`` (e.g. ``["conv", "shift", "add"]``: a
    multiplication-free search; ``["attn"]``: HAT's Attn-only search in a translation space); every stage must keep
    at least one. Architectures of the result are architectures of ``spec``."""
    stages = []
    for i, st in enumerate(spec.stages):
        kept = tuple(b for b in st.blocks if b in blocks)
        if not kept:
            raise ValueError(f"blocks {list(blocks)} leave stage {i} ({st.resolution}x{st.resolution}) of "
                             f"{spec.name!r} no block type; it offers {list(st.blocks)}")
        stages.append(dataclasses.replace(st, blocks=kept))
    restricted = dataclasses.replace(spec, stages=tuple(stages))
    restricted.validate()
    return restricted



# --- the protocol's operations, for any kind of spec ----------------------------------------------------------------
# (each asks the spec, which implements nni_shiftadd.space.kinds.SearchSpaceSpec)

def arch_space(spec: Any) -> dict[str, list[Any]]:
    """Every label of the space and its choices, in network order: what an NNI model space exposes (one
    ``nni.choice`` per label) and what the latency predictor's ``ArchEncoder`` takes as ``space``."""
    return spec.arch_space()


def arch_gates(spec: Any) -> dict[str, tuple[str, int]]:
    """``{label: (depth label, layer index)}``: the layer is active when ``arch[depth label] > index`` (the
    ``gates`` argument of ``ArchEncoder``)."""
    return spec.arch_gates()


def validate_arch(spec: Any, arch: Mapping[str, Any]) -> None:
    """``ValueError`` naming the label unless ``arch`` is an architecture of ``spec``."""
    spec.validate_arch(arch)


def canonical_arch(spec: Any, arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` with its inactive labels at canonical values (validated)."""
    return spec.canonical_arch(arch)


def count_subnets(spec: Any) -> int:
    """How many distinct networks ``spec`` holds."""
    return spec.count_subnets()


def random_arch(spec: Any, rng: random.Random | int | None = None) -> dict[str, Any]:
    """A uniformly random architecture holding every label; ``rng``: a ``random.Random``, a
    ``numpy.random.Generator``, a seed, or ``None`` for a fresh one."""
    return spec.random_arch(rng)


def baseline_arch(spec: Any, op: str, **options: Any) -> dict[str, Any]:
    """The homogeneous baseline of block type ``op`` (options of the kind: ``fallback``/``depths`` for image
    spaces, ``size``/``decoder_depth`` for translation spaces)."""
    return spec.baseline_arch(op, **options)


def structurally_valid(spec: Any, arch: Mapping[str, Any]) -> bool:
    """Whether ``arch``'s labels (each within its choices) combine into a network of ``spec``: what evolution's
    mutation and crossover must respect."""
    return spec.structurally_valid(arch)


def named_baselines(spec: Any, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{"all_<op>": baseline}`` for each of ``ops``."""
    return spec.named_baselines(ops)


def restrict_blocks(spec: Any, blocks: Sequence[str]) -> Any:
    """The same space with every layer's block types limited to ``blocks``."""
    return spec.restrict_blocks(blocks)


class LayerPlan(NamedTuple):
    """One active layer of an architecture, in network order."""

    stage: int
    index: int  # position inside the stage
    op: str
    in_width: int
    width: int
    in_resolution: int
    resolution: int
    downsample: bool  # the paper's "halve": the first layer of every stage after the first


def layer_plan(spec: SpaceSpec, arch: Mapping[str, Any]) -> list[LayerPlan]:
    """The active layers of ``arch`` with their block type, widths and resolutions (what a builder needs)."""
    arch = canonical_arch(spec, arch)
    plan: list[LayerPlan] = []
    width, res = spec.stem.channels, spec.stages[0].resolution
    for i, st in enumerate(spec.stages):
        for j in range(arch[depth_label(i)]):
            plan.append(LayerPlan(i, j, arch[op_label(i, j)], width, st.width, res, st.resolution,
                                  i > 0 and j == 0))
            width, res = st.width, st.resolution
    return plan
