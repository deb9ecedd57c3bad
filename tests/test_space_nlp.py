"""The translation search spaces (paper Table 1) and the hybrid SuperTransformer built from them: the YAML schema
and its errors, the subnet count, HAT's front-slice sharing, and freeze() giving a standalone subnet that computes
exactly what the supernet path computes, in every weight-sharing mode."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError
from nni_shiftadd.space import (arch_space, baseline_arch, canonical_arch, count_subnets, load_space, random_arch,
                                validate_arch)
from nni_shiftadd.space.nlp import HybridNLPSpace, supernet_parameters
from nni_shiftadd.space.nlp_spec import TranslationSpaceSpec
from nni_shiftadd.vocabulary import DECODER_BLOCKS, ENCODER_BLOCKS

VOCAB, PAD = 300, 1


def test_nlp_wmt14_is_table_1() -> None:
    spec = load_space("nlp_wmt14")
    assert isinstance(spec, TranslationSpaceSpec)
    assert spec.encoder.depths == (6,) and spec.decoder.depths == (6, 5, 4, 3, 2, 1)
    assert spec.encoder.blocks == ENCODER_BLOCKS == ("attn", "attn+conv", "attn+shift", "attn+add", "conv", "shift",
                                                      "add")
    assert spec.decoder.blocks == DECODER_BLOCKS == ("attn", "attn+conv", "attn+shift", "attn+add")
    for stack in (spec.encoder, spec.decoder):
        assert stack.embed_dims == (1024, 768, 512) and stack.heads == (16, 8, 4)
        assert stack.ffn_dims == (4096, 3072, 2048, 1024) and stack.kernel_sizes == (3, 7, 15, 31, 31, 31)
    assert spec.decoder.attend == (1, 2, 3) and spec.qkv_dim == 512 and spec.cost_tokens == 30
    # per-layer heads/FFN: 2.8e25; chosen once per stack: 5.0e14, the order of the paper's "about 10^14"
    assert count_subnets(spec) == 28_387_008_840_298_054_011_125_760
    assert 1e14 < count_subnets(dataclasses.replace(spec, elastic="model")) < 1e15


def test_count_matches_enumeration_of_a_tiny_space(tmp_path: Path) -> None:
    import itertools

    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nkind: translation\nqkv_dim: 8\n"
        "encoder: {depths: [2], blocks: [attn, add], embed_dims: [8, 4], heads: [2], ffn_dims: [8, 4], "
        "kernel_sizes: [3, 3]}\n"
        "decoder: {depths: [1, 2], blocks: [attn, attn+shift], embed_dims: [8], heads: [2, 1], ffn_dims: [8], "
        "kernel_sizes: [3, 3], attend: [1, 2]}\n")
    spec = load_space(str(tmp_path / "tiny.yaml"))
    space = arch_space(spec)
    distinct = {tuple(canonical_arch(spec, dict(zip(space, values))).items())
                for values in itertools.product(*space.values())}
    assert count_subnets(spec) == len(distinct)


def test_search_space_info_prints_the_count_and_supernet_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search-space", "nlp_wmt14", "--info"]) == 0
    out = capsys.readouterr().out
    assert "subnets         2.84e+25" in out and "per model: 4.97e+14" in out
    assert "supernet params none" in out and "hws" in out
    none, hws = (supernet_parameters(load_space("nlp_small"), m) for m in ("none", "hws"))
    assert hws < none  # the Conv/Shift/Add candidates share their pools


@pytest.mark.parametrize("edit, message", [
    ("encoder: {blocks: [attn, winograd]}", r"field 'encoder\.blocks\[1\]': got 'winograd'; expected one of \['attn'"),
    ("decoder: {blocks: [attn, conv]}", r"field 'decoder\.blocks\[1\]': got 'conv'; expected one of \['attn', "
                                        r"'attn\+conv'"),
    ("encoder: {heads: [3]}", r"field 'encoder\.heads\[0\]': got 3; expected a divisor of qkv_dim 128"),
    ("encoder: {kernel_sizes: [3, 7]}", r"field 'encoder\.kernel_sizes': .*one odd kernel size per layer position"),
    ("encoder: {kernel_sizes: [3, 4, 5]}", r"field 'encoder\.kernel_sizes\[1\]': got 4; expected an odd int"),
    ("encoder: {embed_dims: [255]}", r"field 'encoder\.embed_dims\[0\]': got 255; expected an even width"),
    ("encoder: {depths: [3, 2]}", r"field 'encoder\.depths': got \[3, 2\]; expected one value"),
    ("decoder: {attend: [1, 4]}", r"field 'decoder\.attend': got \[1, 4\]; expected values <= the encoder's 3"),
    ("kind: speech", r"field 'kind': got 'speech'; expected one of \['image_classification', 'translation'\]"),
    ("elastic: global", r"field 'elastic': got 'global'; expected one of 'layer', 'model'"),
])
def test_bad_space_yaml_names_the_field(tmp_path: Path, edit: str, message: str) -> None:
    import yaml

    base = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "nlp_small.yaml").read_text())
    change = yaml.safe_load(edit)
    for key, value in change.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match=message):
        load_space(str(path))


def test_arch_errors_name_the_label() -> None:
    spec = load_space("nlp_small")
    arch = random_arch(spec, 0)
    with pytest.raises(ValueError, match=r"arch\['encoder\.layer1\.heads'\]: got 3; expected one of \[4, 2\]"):
        validate_arch(spec, {**arch, "encoder.layer1.heads": 3})
    with pytest.raises(ValueError, match=r"unknown key 'encoder\.layer9\.op'"):
        validate_arch(spec, {**arch, "encoder.layer9.op": "attn"})
    missing = dict(arch)
    del missing["decoder.layer0.attend"]
    with pytest.raises(ValueError, match=r"missing key 'decoder\.layer0\.attend'; expected a value out of \[1, 2\]"):
        validate_arch(spec, missing)
    space = HybridNLPSpace(spec, VOCAB, PAD)
    with pytest.raises(ValueError, match=r"arch\['decoder\.layer0\.op'\]: got 'add'"):
        space.freeze({**arch, "decoder.layer0.op": "add"})


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (3, 9), generator=g)
    src[0, :4] = PAD  # left padding, as fairseq's source batches
    prev = torch.randint(4, VOCAB, (3, 7), generator=g)
    return src, prev


@pytest.mark.parametrize("mode", ["hws", "naive", "none"])
def test_frozen_subnet_computes_the_supernet_path(mode: str) -> None:
    spec = load_space("nlp_small")
    torch.manual_seed(0)
    space = HybridNLPSpace(spec, VOCAB, PAD, mode).eval()
    supernet_size = sum(p.numel() for p in space.parameters())
    src, prev = _batch()
    archs = [random_arch(spec, seed) for seed in range(4)]
    archs += [baseline_arch(spec, op, size="smallest", decoder_depth=1) for op in ("add", "shift", "conv")]
    archs.append(baseline_arch(spec, "attn+add"))
    for arch in archs:
        space.activate(arch)
        with torch.no_grad():
            expected = space(src, prev)
            subnet = space.freeze(arch).eval()
            got = subnet(src, prev)
        assert got.shape == (3, 7, VOCAB)
        assert torch.equal(got, expected), (arch, (got - expected).abs().max())
        assert sum(p.numel() for p in subnet.parameters()) < supernet_size / 3
        # the subnet's weights are copies: training it leaves the supernet alone
        next(subnet.parameters()).data.add_(1.0)
        with torch.no_grad():
            assert torch.equal(space(src, prev), expected)


def test_padding_and_causality() -> None:
    spec = load_space("nlp_small")
    torch.manual_seed(0)
    space = HybridNLPSpace(spec, VOCAB, PAD).eval()
    arch = baseline_arch(spec, "attn+conv")
    space.activate(arch)
    src, prev = _batch()
    with torch.no_grad():
        full = space(src, prev)
        # a decoder position never sees later tokens (attention and the causal convolution alike)
        changed = prev.clone()
        changed[:, -1] = 5
        assert torch.allclose(space(src, changed)[:, :-1], full[:, :-1], atol=1e-5)
        # more left padding on the source changes nothing for the other rows' values at their real tokens
        padded = torch.cat([torch.full((3, 2), PAD), src], dim=1)
        assert torch.allclose(space(padded, prev), full, atol=1e-4)


def test_hws_terms_reach_the_pools_and_nnis_sampler_works() -> None:
    spec = load_space("nlp_small")
    space = HybridNLPSpace(spec, VOCAB, PAD, "hws")
    memo: dict = {}
    subnet = space.random(memo=memo)  # NNI's sampler over the space's mutables: a frozen subnet and its sample
    validate_arch(spec, memo)
    assert isinstance(subnet, torch.nn.Module)
    arch = {**baseline_arch(spec, "conv"), "decoder.depth": 1}
    space.activate(arch)
    space.train()
    src, prev = _batch()
    space(src, prev).logsumexp(-1).mean().backward()
    alpha = space.transformer.encoder_layers[0].branch.pools["depthwise"].transform.alpha
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0  # only the KL term reaches T on a Conv path
    assert float(space.transformer.kl()) > 0


def _tiny_translation_module(seen: list) -> Any:
    """A next-token cross-entropy module for NNI's Lightning evaluator; ``seen`` gets each step's active path."""
    from nni.nas.evaluator.pytorch import LightningModule

    class TinyTranslation(LightningModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            src, prev, target = batch
            seen.append(self.model.transformer.config)  # the path RandomOneShot resampled for this step
            return torch.nn.functional.cross_entropy(self.model(src, prev).flatten(0, 1), target.flatten())

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.model(batch[0], batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.model.parameters(), lr=0.1)

    return TinyTranslation()


def test_nni_random_and_oneshot_hooks(tmp_path: Path) -> None:
    """NNI's sampler freezes a subnet; RandomOneShot's traversal (oneshot_hooks, or the space's own hooks) turns the
    SuperTransformer into a TranslationSuperNet whose resample runs exactly the activated path; NNI's Lightning
    plumbing trains it for a few steps, one random architecture per step."""
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.oneshot.pytorch.sampling import RandomSamplingLightningModule
    from nni.nas.strategy import DARTS, RandomOneShot

    from nni_shiftadd.nn import oneshot_hooks
    from nni_shiftadd.space.nlp_oneshot import TranslationSuperNet, translation_hooks
    from nni_shiftadd.space.nlp_transformer import SpaceTransformer, transformer_config
    from nni_shiftadd.space.nlp_spec import arch_space as nlp_arch_space
    from nni_shiftadd.space.nlp_spec import validate_arch as nlp_validate_arch

    spec = load_space("nlp_small")
    torch.manual_seed(0)
    space = HybridNLPSpace(spec, vocab_size=50, padding_idx=1)
    g = torch.Generator().manual_seed(0)
    src, prev = torch.randint(4, 50, (2, 6), generator=g), torch.randint(4, 50, (2, 5), generator=g)

    sample: dict = {}
    model = space.random(memo=sample)
    assert set(sample) == set(nlp_arch_space(spec))
    assert model(src, prev).shape == (2, 5, 50)

    space.eval()
    archs = [random_arch(spec, seed) for seed in (1, 2)] + [baseline_arch(spec, "add", size="smallest",
                                                                          decoder_depth=1)]
    expected = []
    with torch.no_grad():
        for arch in archs:
            space.activate(arch)
            expected.append(space(src, prev))
    keys = list(space.state_dict())

    # the hooks run on the space's children (NNI never hands a hook the root): the SuperTransformer, in its mode
    assert len(translation_hooks()) == 1
    with pytest.raises(ValueError, match="mode='hws'.*mode='naive'"):
        RandomOneShot(mutation_hooks=oneshot_hooks("naive")).mutate_model(HybridNLPSpace(spec, 50, 1, "hws"))
    with pytest.raises(TypeError, match="path sampling only"):
        DARTS().mutate_model(HybridNLPSpace(spec, 50, 1))  # no differentiable twin: no silent fixed-path training
    plain = HybridNLPSpace(spec, 50, 1)
    RandomOneShot().mutate_model(plain)  # without our hooks the space's extra_oneshot_hooks does it
    assert isinstance(plain.transformer, TranslationSuperNet)

    strategy = RandomOneShot(mutation_hooks=oneshot_hooks("hws"))
    assert isinstance(space.transformer, SpaceTransformer)
    assert strategy.mutate_model(space) is space
    supernet = space.transformer
    assert isinstance(supernet, TranslationSuperNet) and not isinstance(supernet, SpaceTransformer)
    assert list(space.state_dict()) == keys  # the twin shares the transformer's modules: same weights, same keys
    assert set(space.simplify()) == set(nlp_arch_space(spec))
    with torch.no_grad():
        for arch, want in zip(archs, expected):
            supernet.resample(random_arch(spec, 7))
            assert supernet.resample(dict(arch)) == arch
            assert torch.equal(space(src, prev), want), arch
            space.activate(random_arch(spec, 8))
            space.activate(arch)  # the space's own activate still drives the mutated space
            assert torch.equal(space(src, prev), want)
            assert torch.equal(space.freeze(arch).eval()(src, prev), want)
    with pytest.raises(ValueError, match=r"arch\['encoder\.layer1\.heads'\]: got 3"):
        supernet.resample({**archs[0], "encoder.layer1.heads": 3})

    # what RandomOneShot runs before every training step (BaseOneShotLightningModule.resample)
    oneshot = RandomSamplingLightningModule(_tiny_translation_module([]))
    oneshot.set_model(space)
    assert list(oneshot.supernet_modules()) == [supernet]
    drawn = [oneshot.resample() for _ in range(4)]
    for arch in drawn:
        nlp_validate_arch(spec, arch)
    assert supernet.config == transformer_config(spec, drawn[-1])
    assert len({tuple(sorted(a.items())) for a in drawn}) > 1
    assert set(supernet.export({})) == set(nlp_arch_space(spec))

    # NNI's own plumbing: OneShotStrategy.mutate_evaluator wraps the module, Lightning.evaluate fits it
    data = torch.utils.data.TensorDataset(torch.randint(4, 50, (6, 6), generator=g),
                                          torch.randint(4, 50, (6, 5), generator=g),
                                          torch.randint(4, 50, (6, 5), generator=g))
    space.train()
    seen: list = []
    before = space.transformer.embed.weight.detach().clone()
    trainer = Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=1, default_root_dir=str(tmp_path))
    evaluator = Lightning(_tiny_translation_module(seen), trainer,
                          train_dataloaders=DataLoader(data, batch_size=2),
                          val_dataloaders=DataLoader(data, batch_size=2))
    strategy.mutate_evaluator(evaluator).evaluate(space)
    assert len(seen) == 3 and len(set(seen)) > 1  # a fresh architecture every step
    assert not torch.equal(space.transformer.embed.weight, before)
