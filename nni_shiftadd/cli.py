"""The ``nni-shiftadd`` command line: ``train``, ``data``, ``kernels``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any

from .config import ConfigError, coerce, from_dict, load_yaml


def _add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field`` flag per dataclass field, parsed as YAML so lists and mappings can be given too."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar="VALUE",
                            help=f"(default from the recipe, else {_default(f)!r}; type {hints[f.name]})")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    import yaml

    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name)
        if raw is None:
            continue
        value = yaml.safe_load(raw) if hints[f.name] is not str else raw
        out[f.name] = coerce(value, hints[f.name], f"--{f.name.replace('_', '-')}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .tasks.classification import TrainConfig, train

    overrides = _overrides(args, TrainConfig)
    cfg = load_yaml(TrainConfig, args.config, overrides) if args.config else from_dict(TrainConfig, overrides,
                                                                                          "command line")
    result = train(cfg)
    print()
    print(f"model           {result['model']} (convert={result['convert']}) layers {result['ops']}")
    print(f"adder kernels   {result['adder_backend']}")
    print(f"train loss      {result['train_loss_first']:.4f} (first 10% of steps) -> "
          f"{result['train_loss_last']:.4f} (last 10%), {result['train_steps']} steps in {result['fit_seconds']} s")
    print(f"val accuracy    {result['val_acc']:.4f}")
    print(f"test accuracy   {result['test_acc']:.4f}")
    print(f"checkpoint      {result['checkpoint']}")
    print(f"metrics         {cfg.output}/metrics.json")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import create_dataset, dataset_info, list_datasets

    names = list_datasets() if args.name == "all" else [args.name]
    for name in names:
        info = dataset_info(name)
        sizes = {s: len(create_dataset(name, s, data_dir=args.data_dir)) for s in info.splits}
        print(f"{name}: {info.num_classes} classes, input {info.input_size}, splits {sizes}")
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    import torch

    from .kernels import cpu, select

    lib = cpu.load()
    report = {
        "cpu_kernel": None if lib is None else lib._name,
        "vector_bytes": None if lib is None else lib.nsa_vector_bytes(),
        "cpu_backend": select(torch.empty(0)).__name__.rsplit(".", 1)[-1],
        "cuda_backend": select(torch.empty(0, device="cuda")).__name__.rsplit(".", 1)[-1]
        if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=2))
    return 0 if lib is not None else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-shiftadd", description="ShiftAddNAS for NNI: hybrid Shift/Add/Conv/"
                                     "Attn networks and their search.")
    sub = parser.add_subparsers(dest="command", required=True)

    from .tasks.classification import TrainConfig

    p = sub.add_parser("train", help="train an image classifier (optionally converted to Add/Shift layers)",
                       description="Train a timm-registered model on an image dataset with Lightning. Fields come "
                       "from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", help="training recipe (YAML), e.g. examples/fashion_mnist/hybrid_resnet20.yaml")
    _add_config_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="check that a dataset is present and print its splits")
    p.add_argument("name", nargs="?", default="all", help="dataset name, or 'all'")
    p.add_argument("--data-dir", default=None, help="where the dataset files are (default: system install)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("kernels", help="build the fast CPU adder kernel (cached) and report the backends in use")
    p.set_defaults(func=cmd_kernels)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"nni-shiftadd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
