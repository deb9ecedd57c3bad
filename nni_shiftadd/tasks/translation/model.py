"""fairseq model ``shiftadd_supertransformer``: the hybrid SuperTransformer of a translation search space
(:class:`~nni_shiftadd.space.nlp.HybridNLPSpace`) behind fairseq's encoder-decoder interface, or, with ``--subnet``,
one subnet of it trained on its own (retraining from scratch).

Architecture presets (``--arch``): ``shiftadd_nlp_small`` (the default space), ``shiftadd_nlp_tiny`` (the demo's)
and ``shiftadd_nlp_wmt14`` (paper Table 1). The encoder and decoder wrappers hold no parameters of their own: the network is registered once, as
``supernet``, so a checkpoint holds each weight once.
"""
# No `from __future__ import annotations`: fairseq reads the config dataclasses' field types at run time.
from dataclasses import dataclass, field
from typing import Any

from fairseq.dataclass import FairseqDataclass
from fairseq.models import (FairseqDecoder, FairseqEncoder, FairseqEncoderDecoderModel, register_model,
                            register_model_architecture)
from torch import Tensor

from ...hws import MODES, HWSConfig
from ...nn.transformer import EncoderOut, SuperTransformer
from ...quant import check_bits, fake_quantize, float_state_to_quantized, quantized_layers
from ...space.nlp import HybridNLPSpace
from ...space.nlp_spec import TranslationSpaceSpec
from ...space.spec import load_space
from .archs import OptionError, parse_arch


@dataclass
class ShiftAddSuperTransformerConfig(FairseqDataclass):
    space: str = field(default="nlp_small", metadata={"help": "translation search space: a shipped name "
                                                              "(nlp_small, nlp_wmt14) or a YAML path"})
    mode: str = field(default="hws", metadata={"help": "weight sharing of the Conv/Shift/Add candidates: "
                                                       "none, naive or hws"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of the eq. (5) terms (hws mode)"})
    hws_estimator: str = field(default="spacing", metadata={"help": "estimator of the eq. (5) terms: spacing, "
                                                                    "moments or softmax (hws mode)"})
    hws_segments: int = field(default=200, metadata={"help": "runs of the transform T (eq. (6))"})
    hws_binning: str = field(default="rank", metadata={"help": "T's runs: rank (eq. (6)) or value (authors' code)"})
    hws_laplace_scale: float = field(default=1.0, metadata={"help": "scale b of the Laplace reference of eq. (5)"})
    hws_max_samples: int = field(default=4096, metadata={"help": "spacing estimator: elements per pool and step"})
    hws_add_adaptive_lr: str = field(default="own", metadata={"help": "AdderNet's adaptive LR on Add's weight "
                                                                      "gradient: own (not on shared pools), always, "
                                                                      "never"})
    subnet: str = field(default="", metadata={"help": "train one subnet from scratch instead of the supernet: an "
                                                      "architecture as inline JSON or a JSON file"})
    quant_bits: int = field(default=0, metadata={"help": "with --subnet: fake-quantise its weights and inputs to this "
                                                         "many bits (quantisation-aware training; 0: floating "
                                                         "point); --finetune-from-model starts it from a float one"})


class ShiftAddEncoder(FairseqEncoder):
    """fairseq's view of the network's encoder (the parameters live in the model's ``supernet``)."""

    def __init__(self, dictionary: Any, net: SuperTransformer, max_positions: int) -> None:
        super().__init__(dictionary)
        self.__dict__["net"] = net  # not a submodule: registered once, in the model
        self._max_positions = max_positions

    def forward(self, src_tokens: Tensor, src_lengths: Tensor | None = None, **kwargs: Any) -> dict[str, list[Tensor]]:
        out = self.net.encode(src_tokens)
        return {"encoder_out": out.layers, "encoder_padding_mask": [out.padding_mask]}

    def reorder_encoder_out(self, encoder_out: dict[str, list[Tensor]], new_order: Tensor) -> dict[str, list[Tensor]]:
        return {"encoder_out": [x.index_select(0, new_order) for x in encoder_out["encoder_out"]],
                "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)]}

    def max_positions(self) -> int:
        return self._max_positions


class ShiftAddDecoder(FairseqDecoder):
    """fairseq's view of the network's decoder: the whole prefix is decoded at every step (no incremental state)."""

    def __init__(self, dictionary: Any, net: SuperTransformer, max_positions: int) -> None:
        super().__init__(dictionary)
        self.__dict__["net"] = net
        self._max_positions = max_positions

    def forward(self, prev_output_tokens: Tensor, encoder_out: dict[str, list[Tensor]] | None = None,
                incremental_state: Any = None, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        if encoder_out is None:
            raise ValueError("the ShiftAdd decoder needs the encoder's output")
        memory = EncoderOut(encoder_out["encoder_out"], encoder_out["encoder_padding_mask"][0])
        return self.net.decode(prev_output_tokens, memory), {"attn": [None], "inner_states": None}

    def max_positions(self) -> int:
        return self._max_positions


@register_model("shiftadd_supertransformer", dataclass=ShiftAddSuperTransformerConfig)
class ShiftAddSuperTransformer(FairseqEncoderDecoderModel):
    """The SuperTransformer (``space`` is the :class:`HybridNLPSpace` whose path the task activates each update), or
    a standalone subnet (``space`` is ``None``)."""

    def __init__(self, encoder: ShiftAddEncoder, decoder: ShiftAddDecoder, net: SuperTransformer,
                 space: HybridNLPSpace | None, spec: TranslationSpaceSpec) -> None:
        super().__init__(encoder, decoder)
        self.supernet = net
        self.__dict__["space"] = space  # its one module is ``supernet``
        self.spec = spec

    @classmethod
    def build_model(cls, cfg: ShiftAddSuperTransformerConfig, task: Any) -> "ShiftAddSuperTransformer":
        try:
            return cls._build(cfg, task)
        except ValueError as err:  # the plugin's options: a named error, not a traceback
            raise OptionError(str(err)) from None

    @classmethod
    def _build(cls, cfg: ShiftAddSuperTransformerConfig, task: Any) -> "ShiftAddSuperTransformer":
        if cfg.mode not in MODES:
            raise ValueError(f"--mode: got {cfg.mode!r}; expected one of {list(MODES)}")
        try:
            spec = load_space(cfg.space)
        except (ValueError, OSError) as err:
            raise ValueError(f"--space: {err}") from None
        if spec.kind != "translation":
            raise ValueError(f"--space: {cfg.space!r} is not a translation space (kind: translation); e.g. nlp_small")
        src, tgt = task.source_dictionary, task.target_dictionary
        if spec.share_embeddings and src != tgt:
            raise ValueError(f"space {spec.name!r} shares its embeddings: the data needs a joined dictionary "
                             "(fairseq-preprocess --joined-dictionary; `nni-shiftadd data translation` makes one)")
        arch = parse_arch(cfg.subnet)
        if arch is None:
            hws = HWSConfig(cfg.hws_estimator, cfg.hws_segments, cfg.hws_binning, cfg.hws_laplace_scale,
                            cfg.hws_max_samples, cfg.hws_add_adaptive_lr)
            try:
                hws.validate()
            except ValueError as err:
                raise ValueError(f"--hws-* options ({err}; --hws-x-y sets field x_y)") from None
            space: HybridNLPSpace | None = HybridNLPSpace(spec, len(tgt), tgt.pad(), cfg.mode, cfg.kl_weight, hws)
            net = space.transformer
        else:
            space, net = None, HybridNLPSpace(spec, len(tgt), tgt.pad(), "none").freeze(arch)
        if cfg.quant_bits:
            if arch is None:
                raise ValueError(f"--quant-bits {cfg.quant_bits}: quantisation-aware training is for one subnet "
                                 "(--subnet), not the supernet")
            try:
                fake_quantize(net, check_bits(cfg.quant_bits))
            except ValueError as err:
                raise ValueError(f"--quant-bits: {err}; or 0 for floating point") from None
        return cls(ShiftAddEncoder(src, net, spec.max_positions), ShiftAddDecoder(tgt, net, spec.max_positions),
                   net, space, spec)

    def upgrade_state_dict_named(self, state_dict: dict[str, Tensor], name: str) -> None:
        """fairseq's hook before every load: a float subnet's weights loaded into its fake-quantised twin
        (``--quant-bits`` with ``--finetune-from-model``) take the quantised model's names."""
        super().upgrade_state_dict_named(state_dict, name)
        if self.space is None and quantized_layers(self.supernet):
            prefix = f"{name}." if name else ""
            ours = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            converted = float_state_to_quantized(self, ours)
            for key in ours:
                del state_dict[prefix + key]
            state_dict.update({prefix + k: v for k, v in converted.items()})

    def activate(self, arch: dict[str, Any]) -> None:
        """Run ``arch`` from the next forward pass on (the supernet only)."""
        if self.space is None:
            raise ValueError("this model is one subnet (--subnet); it has no other paths to activate")
        self.space.activate(arch)

    def max_positions(self) -> tuple[int, int]:
        return self.spec.max_positions, self.spec.max_positions


@register_model_architecture("shiftadd_supertransformer", "shiftadd_nlp_small")
def shiftadd_nlp_small(cfg: Any) -> None:
    """The ``nlp_small`` space (trans-de-en on a laptop CPU)."""
    cfg.space = getattr(cfg, "space", "nlp_small") or "nlp_small"


@register_model_architecture("shiftadd_supertransformer", "shiftadd_nlp_tiny")
def shiftadd_nlp_tiny(cfg: Any) -> None:
    """The ``nlp_tiny`` space (the translation demo's: trains in minutes on two CPU cores)."""
    cfg.space = "nlp_tiny" if getattr(cfg, "space", "nlp_small") == "nlp_small" else cfg.space


@register_model_architecture("shiftadd_supertransformer", "shiftadd_nlp_wmt14")
def shiftadd_nlp_wmt14(cfg: Any) -> None:
    """The ``nlp_wmt14`` space (paper Table 1, WMT'14 En-De / En-Fr)."""
    cfg.space = "nlp_wmt14" if getattr(cfg, "space", "nlp_small") == "nlp_small" else cfg.space
