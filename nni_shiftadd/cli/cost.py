"""Cost commands: ``profile`` (op counts, energy and latency of a model, a workload or a subnet) and
``latency-predictor`` (measure subnets on this device and fit HAT's latency predictor)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..config import ConfigError, arch_argument
from ..vocabulary import MULTIPLICATION_FREE
from ._command import Command, recipe, yaml_flag

class _ProfileError(ValueError):
    """A bad ``profile`` argument: the message names the flag and the value."""


def _parse_input_size(raw: str) -> tuple[int, ...]:
    try:
        size = tuple(int(x) for x in raw.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise _ProfileError(f"--input-size: bad value {raw!r}; expected C,H,W (three positive integers, e.g. "
                            "3,224,224)")
    return size


def _parse_options(raw: list[str], bits: int) -> dict[str, Any]:
    from ..cost.eyeriss import EyerissConfig
    from ..cost.profile import eyeriss_config

    options: dict[str, Any] = {}
    for item in raw:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _ProfileError(f"--option: bad value {item!r}; expected key=value, e.g. adder_on_chip=false")
        try:
            options[key.strip()] = yaml_flag(value, f"--option {key.strip()}")
        except ConfigError as err:
            raise _ProfileError(str(err)) from None
    fields = sorted([f.name for f in dataclasses.fields(EyerissConfig) if f.name != "bits"] + ["preset"])
    for key, value in options.items():
        if key not in fields:
            raise _ProfileError(f"--option {key}={value!r}: unknown Eyeriss option {key!r}; the options are {fields}")
        try:
            eyeriss_config(bits, **{key: value})
        except (ValueError, TypeError) as err:
            raise _ProfileError(f"--option {key}={value!r}: {err}") from None
    return options


def _build_timm_model(args: argparse.Namespace, size: tuple[int, ...] | None) -> tuple[Any, tuple[int, ...]]:
    """A model factory for --model (called once per device tried) and the input size (C, H, W)."""
    import timm
    import torch

    from .. import models  # noqa: F401  (registers the shiftadd_* models)
    from ..ops import convert_model

    try:
        kwargs = yaml_flag(args.model_kwargs, "--model-kwargs") if args.model_kwargs else {}
    except ConfigError as err:
        raise _ProfileError(str(err)) from None
    if not isinstance(kwargs, dict):
        raise _ProfileError(f"--model-kwargs: {args.model_kwargs!r} is not a mapping, e.g. '{{op: add}}'")
    if not timm.is_model(args.model):
        raise _ProfileError(f"--model: unknown model {args.model!r} (not in timm's registry)")
    if size is not None:
        kwargs.setdefault("in_chans", size[0])

    def build() -> Any:
        model = timm.create_model(args.model, **kwargs)
        if args.convert != "none":
            model = convert_model(model, args.convert, copy_weights=False, inplace=True)
        return model.eval()

    try:
        try:
            with torch.device("meta"):
                probe = build()
        except Exception:  # noqa: BLE001 - some models cannot be built on meta; the real device decides
            probe = build()
    except Exception as err:  # noqa: BLE001 - any construction error is the user's model/kwargs
        raise _ProfileError(f"--model {args.model} --model-kwargs {kwargs!r}: {type(err).__name__}: {err}") from None
    if size is None:
        cfg = getattr(probe, "pretrained_cfg", None) or {}
        if not cfg.get("input_size"):
            raise _ProfileError(f"--input-size: required for model {args.model!r} (its pretrained_cfg gives none)")
        size = tuple(int(x) for x in cfg["input_size"])
    return build, size


def _profile_subnet(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``profile --space S --arch A``: the cost of one subnet of a search space on its per-layer fast path (image
    spaces at their input resolution, translation spaces as a 30-token sentence)."""
    from ..cost.layerwise import space_records
    from ..cost.profile import report_from_records
    from ..space.spec import load_space

    if not args.arch:
        raise _ProfileError("--space: needs --arch (a JSON file or inline JSON of the subnet's labels)")
    if args.model_kwargs or args.convert != "none" or args.input_size:
        raise _ProfileError("--space: --model-kwargs, --convert and --input-size apply to --model only")
    spec = load_space(args.space)
    arch = arch_argument(args.arch)
    try:
        records = space_records(spec)(arch)
    except ValueError as err:
        raise _ProfileError(f"--arch: {err}") from None
    report = report_from_records(records, hardware=args.hardware, bits=args.bits, **options)
    print(report.to_json() if args.json else f"space {spec.name} subnet\n{report.table(max_rows=args.max_rows)}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from ..cost.profile import report_from_records
    from ..cost.profilers import trace_model

    try:
        options = _parse_options(args.option or [], args.bits)
        if args.space:
            return _profile_subnet(args, options)
        if args.arch:
            raise _ProfileError("--arch: goes with --space (the search space the architecture belongs to)")
        if args.workload:
            if args.model_kwargs or args.convert != "none" or args.input_size:
                raise _ProfileError("--workload: --model-kwargs, --convert and --input-size apply to --model only")
            from ..cost.workloads import transformer_big

            if args.tokens < 1:
                raise _ProfileError(f"--tokens: bad value {args.tokens}; expected a positive integer")
            model, inputs = transformer_big(args.tokens)
            build, what = (lambda: model), f"workload {args.workload} ({args.tokens} tokens)"
            meta = False  # its attention matmuls are only exact on real tensors
        else:
            if args.batch < 1:
                raise _ProfileError(f"--batch: bad value {args.batch}; expected a positive integer")
            size = _parse_input_size(args.input_size) if args.input_size else None
            build, size = _build_timm_model(args, size)
            inputs = (torch.zeros(args.batch, *size),)
            what = f"model {args.model} (convert={args.convert}) input {args.batch}x" + "x".join(map(str, size))
            meta = True
        try:
            trace, _ = trace_model(build, *inputs, meta=meta, unmodelled=args.unmodelled)
        except ValueError as err:
            raise _ProfileError(f"{what}: {err}") from None
        except Exception as err:  # noqa: BLE001 - e.g. an input size the model cannot take
            raise _ProfileError(f"{what}: forward pass failed (check --input-size): {type(err).__name__}: "
                                f"{err}") from None
    except _ProfileError as err:
        print(f"nni-shiftadd profile: error: {err}", file=sys.stderr)
        return 2
    report = report_from_records(trace.layers, hardware=args.hardware, bits=args.bits, unmodelled=trace.unmodelled,
                                 **options)
    if args.json:
        print(report.to_json())
    else:
        print(what)
        print(report.table(max_rows=args.max_rows))
    return 0


def cmd_latency_predictor(args: argparse.Namespace) -> int:
    from ..cost.measured import LatencyPredictorConfig, build_latency_predictor

    cfg = recipe(args, LatencyPredictorConfig)
    report = build_latency_predictor(cfg)
    m = report["measured"]
    print(f"measured        {m['samples']} architectures of {cfg.space} on {m['device']} (batch {m['batch']}, "
          f"{m['warmup']} warm-up + {m['repeats']} runs, {100 * m['trim']:.0f}% trimmed each end"
          + (f", each run beside one of the all-{m['reference']} reference" if m["reference"] else "")
          + f"): {m['min_ms']:.2f}-{m['max_ms']:.2f} ms")
    for split in ("train", "val", "test"):
        r = report[split]
        if r:
            print(f"{split:5s} error     mean {100 * r['mean_rel_err']:.2f}%, max {100 * r['max_rel_err']:.1f}% "
                  f"(n={r['n']})")
    print(f"predictor       {cfg.output}.safetensors + .json; search with `latency: predictor, predictor: "
          f"{cfg.output}` in a strategy preset")
    return 0


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="timm model name, e.g. shiftadd_resnet20 or resnet50")
    what.add_argument("--workload", choices=["transformer_big"], help="a reference workload (paper Table 3)")
    what.add_argument("--space", help="a search space (name or YAML path): cost the subnet given by --arch")
    p.add_argument("--arch", default=None, metavar="JSON", help="with --space: the subnet, a JSON file or inline JSON")
    p.add_argument("--model-kwargs", default=None, metavar="YAML", help="keyword arguments of the model, e.g. "
                   "'{op: [conv, shift, add]}'")
    p.add_argument("--convert", choices=["none", *MULTIPLICATION_FREE], default="none",
                   help="turn the model's Conv/Linear layers (not the stem and classifier) into Add or Shift layers")
    p.add_argument("--input-size", default=None, metavar="C,H,W",
                   help="input size (default: the model's pretrained_cfg); C also sets in_chans")
    p.add_argument("--batch", type=int, default=1, help="batch size of the profiled pass (default 1)")
    p.add_argument("--tokens", type=int, default=30, help="sentence length of --workload transformer_big")
    p.add_argument("--hardware", choices=["eyeriss", "none"], default="eyeriss",
                   help="'eyeriss': energy and latency too; 'none': op counts only")
    p.add_argument("--bits", type=int, choices=[32, 16, 8], default=32, help="word width (default 32)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="an EyerissConfig field, e.g. adder_on_chip=false or pe_rows=16 (repeatable)")
    p.add_argument("--unmodelled", choices=["error", "report"], default="error",
                   help="a layer without a cost model is an error (default) or listed and left out")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--max-rows", type=int, default=None, metavar="N", help="print at most N layer rows")


COMMANDS: list[Command] = [
    Command("profile", "op counts, energy and latency of a model on the Eyeriss cost model", cmd_profile,
            description="Trace one forward pass of a timm-registered model (or a reference workload) and cost every "
            "compute layer: #Params, #MACs, #Mult/#Add/#Shift (Table 4 conventions) and, with --hardware eyeriss, "
            "energy per memory level and latency.", arguments=_profile_arguments),
    Command("latency-predictor", "measure subnets' latency on this device and fit HAT's predictor",
            cmd_latency_predictor,
            description="Sample architectures of an image space, time each subnet's forward pass on this device "
            "(warm-up runs, trimmed mean; by default as a ratio to the all-Conv subnet run beside it, which cancels a "
            "drifting machine speed), fit the 3 x 400 MLP latency predictor and save it for the evolution's "
            "`latency: predictor` constraint; prints the held-out error. Measurements are cached in "
            "<output>.measured.jsonl: run it again after a kill to resume. Fields come from --config (YAML) and are "
            "overridden by the flags below.",
            schema=".cost.measured:LatencyPredictorConfig", config="recipe (YAML) with the fields below"),
]
