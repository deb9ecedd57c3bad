"""Search commands: ``demo`` (the main job), ``register``, ``create``, ``trial`` and ``search-space``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import trial_host
from ..config import ConfigError, from_dict, json_argument
from ._command import Command, recipe_overrides

def cmd_demo(args: argparse.Namespace) -> int:
    from ..experiment.demo import DemoConfig, format_summary, load_demo_config, run_demo
    from ..experiment.nnictl import ExperimentError

    cfg = load_demo_config(args.config, recipe_overrides(args, DemoConfig))
    try:
        results = run_demo(cfg)
    except ExperimentError as err:
        print(f"nni-shiftadd demo: error: {err}", file=sys.stderr)
        return 1
    print(format_summary(results))
    return 0 if results.get("best") else 1


def cmd_register(args: argparse.Namespace) -> int:
    from ..experiment.nnictl import register

    print(register())
    print("tuner 'ShiftAddEvolution' can now be named in an nnictl config: tuner: {name: ShiftAddEvolution, "
          "classArgs: {space: cv_small, preset: cv_small}}")
    return 0


def cmd_search_space(args: argparse.Namespace) -> int:
    from ..strategy.tuner import search_space_json

    if args.info:
        print(_space_summary(args.space))
        return 0
    text = json.dumps(search_space_json(args.space), indent=1)
    if args.out:
        _write_text(args.out, text + "\n", "--out")
    else:
        print(text)
    return 0


def _write_text(path: str, text: str, flag: str) -> None:
    """Write ``text`` to the file ``path``; a directory, a missing folder or a file in the way is named."""
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag}: {path!r} is a directory; give a file name, e.g. {str(target / 'space.json')!r}")
    parent = target.absolute().parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"{flag}: {path!r} lies under {str(folder)!r}, which is a file")
            break
    if not parent.is_dir():
        raise ConfigError(f"{flag}: the folder {str(parent)!r} does not exist; create it first")
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{flag}: cannot write {path!r}: {err.strerror}") from None


def _space_summary(space: str) -> str:
    """What ``search-space --info`` prints: the stages (or the encoder and decoder), the subnet count and the
    supernet size per sharing mode."""
    from ..space import load_space

    spec = load_space(space)
    return {"image_classification": _image_summary, "translation": _translation_summary}[spec.kind](spec)


def _image_summary(spec: Any) -> str:
    from ..space import count_subnets
    from ..space.cv import supernet_parameters
    from ..space.spec import valid_depths

    lines = [f"space           {spec.name}: {spec.description}",
             f"input           {spec.input.channels} x {spec.input.size} x {spec.input.size}, "
             f"{spec.num_classes} classes"]
    for i, st in enumerate(spec.stages):
        lines.append(f"stage {i}         {st.resolution}^2 x {st.width}: depths {list(st.depths)}, blocks "
                     f"{list(st.blocks)}")
    patterns = valid_depths(spec)
    total = count_subnets(spec)
    lines.append(f"subnets         {total:,} ({total:.2e}) over {len(patterns)} depth pattern(s)"
                 + (f", total depth {spec.total_depth}" if spec.total_depth is not None else ""))
    params = {mode: supernet_parameters(spec, mode) for mode in ("none", "naive", "hws")}
    lines.append("supernet params " + ", ".join(f"{mode} {n / 1e6:.2f}M" for mode, n in params.items())
                 + f" (hws {params['hws'] / params['none'] - 1:+.0%} against none)")
    return "\n".join(lines)


def _translation_summary(spec: Any) -> str:
    import dataclasses as dc

    from ..space import count_subnets
    from ..space.nlp import supernet_parameters

    lines = [f"space           {spec.name}: {spec.description}"]
    for side in ("encoder", "decoder"):
        st = getattr(spec, side)
        lines.append(f"{side:<16s}depths {list(st.depths)}, blocks {list(st.blocks)}, embed {list(st.embed_dims)}, "
                     f"heads {list(st.heads)}, FFN {list(st.ffn_dims)}, kernels {list(st.kernel_sizes)}"
                     + (f", attends to the last {list(st.attend)} encoder layers" if side == "decoder" else ""))
    lines.append(f"attention       q/k/v width {spec.qkv_dim}; elastic heads and FFN chosen per {spec.elastic}")
    total = count_subnets(spec)
    other = "model" if spec.elastic == "layer" else "layer"
    lines.append(f"subnets         {total:.2e} ({total:,}); with heads and FFN chosen per {other}: "
                 f"{count_subnets(dc.replace(spec, elastic=other)):.2e}")
    params = {mode: supernet_parameters(spec, mode) for mode in ("none", "naive", "hws")}
    lines.append("supernet params " + ", ".join(f"{mode} {n / 1e6:.1f}M" for mode, n in params.items())
                 + f" (hws {params['hws'] / params['none'] - 1:+.0%} against none; a 32K-token joined vocabulary)")
    return "\n".join(lines)


def cmd_trial(args: argparse.Namespace) -> int:
    from ..tasks.trial_config import TrialConfig

    fields = recipe_overrides(args, TrialConfig)
    if args.shared_host and not trial_host.in_host_command():
        # before the recipe is checked, which imports torch: the host's child checks it
        from ..tasks.kinds import task_kind_of

        kind = task_kind_of(fields.get("supernet", TrialConfig.supernet), fields.get("space"))
        return trial_host.run_shared(__package__, args.argv, kind.trial_preload)
    from ..tasks.trial import run_trial

    cfg = from_dict(TrialConfig, fields, "command line")
    try:
        run_trial(cfg, json_argument(args.arch, "--arch") if args.arch else None)
    except ValueError as err:
        print(f"nni-shiftadd trial: error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..experiment.nnictl import ExperimentError, check_address, create, free_port, listening_addresses

    check_address(args.host, args.port)
    if not Path(args.config).is_file():
        raise ConfigError(f"--config: no such experiment config {args.config!r}")
    try:
        port = free_port(args.port, args.host)
        experiment_id = create(args.config, port, args.host)
    except ExperimentError as err:
        print(f"nni-shiftadd create: error: {err}", file=sys.stderr)
        return 1
    print(f"experiment {experiment_id}: web UI http://{args.host}:{port} (listening on "
          f"{sorted(listening_addresses(port))}); stop it with: nnictl stop {experiment_id}")
    return 0


def _search_space_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="a shipped space name (cv_small, cv_imagenet, nlp_small, ...) or a YAML path")
    p.add_argument("--out", default=None, help="write to this file instead of printing")
    p.add_argument("--info", action="store_true",
                   help="print a summary instead: stages, subnet count, supernet parameters per sharing mode")


def _trial_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None, help="the architecture: inline JSON or a JSON file (outside NNI)")
    p.add_argument("--shared-host", action="store_true",
                   help="run as a fork of the shared warm trial host, which has imported torch & co once for every "
                   "trial (the first trial that finds none starts it and runs alone; it exits after "
                   f"{trial_host.IDLE_EXIT:.0f} s without a trial)")


def _create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="an nnictl experiment config, e.g. "
                   "examples/fashion_mnist/config.yml")
    p.add_argument("--port", type=int, default=8080, help="web UI port (the next free one if taken)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")


COMMANDS: list[Command] = [
    Command("demo", "the main job: train a supernet, search it with nnictl, print the best", cmd_demo,
            description="Train a supernet (the cv_small one on Fashion-MNIST by default; a translation recipe such as "
            "examples/translation/demo.yaml trains a SuperTransformer on trans-de-en), run the evolution search as an "
            "NNI experiment (nnictl create, web UI on 127.0.0.1), wait for its trials and print the best architecture "
            "with its accuracy (or BLEU), energy, latency and op counts beside the homogeneous baselines. Run it "
            "again after a kill: it resumes. Fields come from --config (YAML) and are overridden by the flags below.",
            schema=".experiment.demo:DemoConfig",
            config="demo recipe (YAML); default examples/fashion_mnist/demo.yaml"),
    Command("register", "register the ShiftAddEvolution tuner with nnictl (nnictl algo register)", cmd_register),
    Command("search-space", "the NNI search-space JSON of a search-space YAML", cmd_search_space,
            arguments=_search_space_arguments),
    Command("trial", "evaluate one architecture with supernet weights and report it to NNI", cmd_trial,
            description="The trial command of a search: under NNI it takes the architecture from "
            "nni.get_next_parameter() and reports accuracy (image spaces) or validation loss and BLEU (translation), "
            "energy, latency and op counts; otherwise pass --arch.",
            schema=".tasks.trial_config:TrialConfig", arguments=_trial_arguments),
    Command("create", "nnictl create with the web UI and REST API on 127.0.0.1 only", cmd_create,
            arguments=_create_arguments),
]
