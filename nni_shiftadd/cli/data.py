"""Data and kernel commands: ``data`` (check an image dataset, prepare the translation data) and ``kernels``."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import ConfigError, from_dict, load_yaml_text
from ._command import Command, recipe_overrides

def cmd_data(args: argparse.Namespace) -> int:
    from ..data import check_data_dir, create_dataset, dataset_info, list_datasets
    from ..data.translation import TranslationDataConfig

    if args.name == "translation":
        return _prepare_translation(args)
    given = [f"--{k.replace('_', '-')}" for k in recipe_overrides(args, TranslationDataConfig)]
    if given or args.config:
        raise ConfigError(f"{(given or ['--config'])[0]}: applies to `nni-shiftadd data translation` only")
    names = list_datasets() if args.name == "all" else [args.name]
    for name in names:
        info = dataset_info(name)  # an unknown name lists the known ones
        # with 'all', --data-dir is for the datasets that read one
        data_dir = None if args.name == "all" and info.bundled_with else args.data_dir
        check_data_dir(name, data_dir, "--data-dir")
        info = dataset_info(name, data_dir)  # a folder dataset counts its classes
        sizes = {s: len(create_dataset(name, s, data_dir=data_dir)) for s in info.splits}
        print(f"{name}: {info.num_classes} classes, input {info.input_size}, splits {sizes}")
    return 0


def _prepare_translation(args: argparse.Namespace) -> int:
    from ..data.translation import TranslationDataConfig, prepare_translation

    if args.data_dir is not None:
        raise ConfigError("--data-dir: is for image datasets; for translation give --binarized DIR (a "
                          "fairseq-binarised directory) or --source FILE (the trans-de-en dictionary)")
    cfg = _translation_data_config(args.config, recipe_overrides(args, TranslationDataConfig))
    manifest = prepare_translation(cfg, progress=lambda line: print(line, flush=True))
    print(f"translation data  {manifest['data_bin']}")
    if manifest.get("sizes"):
        print(f"sentence pairs    {manifest['pairs']} extracted from {manifest['source']}; splits "
              f"{manifest['sizes']}")
        print(f"references        {manifest['raw']} (untokenised, for sacrebleu)")
    return 0


def _translation_data_config(path: str | None, overrides: dict[str, Any]) -> Any:
    """The data settings of a YAML file: its ``data`` block (a translation recipe) or its top level."""
    from pathlib import Path

    from ..data.translation import TranslationDataConfig

    if path is None:
        return from_dict(TranslationDataConfig, overrides, "command line")
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    data = load_yaml_text(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of data fields (or a recipe with a 'data' block)")
    return from_dict(TranslationDataConfig, {**data, **overrides}, path)


def cmd_kernels(args: argparse.Namespace) -> int:
    import torch

    from ..kernels import cpu, select

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


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default="all", help="dataset name, 'all', or 'translation'")
    parser.add_argument("--data-dir", default=None, help="where the image dataset files are (default: system "
                        "install)")


COMMANDS: list[Command] = [
    Command("data", "check that a dataset is present and print its splits; 'translation' prepares the "
            "German-English pairs", cmd_data,
            description="Image datasets: check that the files are there and print the splits. 'translation': "
            "extract the sentence pairs of the Debian package trans-de-en, split them, tokenise them (sacremoses), "
            "learn a joint BPE (subword-nmt) and binarise them with fairseq-preprocess into the cache, once per "
            "settings; the settings come from --config (a translation recipe's 'data' block, or a YAML of these "
            "fields) and the flags below. --binarized DIR checks an existing fairseq-binarised folder.",
            schema=".data.translation:TranslationDataConfig", arguments=_data_arguments,
            config="translation: a recipe with a 'data' block, or a YAML of its fields"),
    Command("kernels", "build the fast CPU adder kernel (cached) and report the backends in use", cmd_kernels),
]
