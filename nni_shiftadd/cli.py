"""The ``nni-shiftadd`` command line: ``demo``, ``train-supernet``, ``train-supertransformer``, ``retrain``,
``register``, ``create``, ``trial``, ``search-space``, ``plot``, ``train``, ``profile``, ``data``, ``kernels``,
``fairseq-user-dir``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any

from .config import ConfigError, arch_argument, coerce, from_dict, json_argument, load_yaml, load_yaml_text


def _add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field`` flag per dataclass field, parsed as YAML so lists and mappings can be given too."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, metavar="VALUE",
                            help=f"(default from the recipe, else {_default(f)!r}; type {hints[f.name]})")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _yaml_flag(raw: str, flag: str) -> Any:
    """A flag's value parsed as YAML (so ``1e-3``, ``[1, 2]`` and ``{max: 0.3}`` work); a syntax error names the flag."""
    import yaml

    try:
        return load_yaml_text(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{flag}: {raw!r} is not valid YAML ({problem}); quote a mapping like "
                          "'{key: value}' and a list like '[a, b]'") from None


def _overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name)
        if raw is None:
            continue
        flag = f"--{f.name.replace('_', '-')}"
        value = _yaml_flag(raw, flag) if hints[f.name] is not str else raw
        out[f.name] = coerce(value, hints[f.name], flag)
    return out


def _recipe(args: argparse.Namespace, cls: type) -> Any:
    """The ``cls`` recipe of ``--config`` (YAML) with the command line's flags on top, or of the flags alone."""
    overrides = _overrides(args, cls)
    if args.config:
        return load_yaml(cls, args.config, overrides, overrides_from="command line")
    return from_dict(cls, overrides, "command line")


def cmd_train(args: argparse.Namespace) -> int:
    from .tasks.classification import TrainConfig, train

    cfg = _recipe(args, TrainConfig)
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


def cmd_train_supernet(args: argparse.Namespace) -> int:
    from .tasks.supernet import SupernetConfig, train_supernet

    cfg = _recipe(args, SupernetConfig)
    result = train_supernet(cfg)
    if not result:  # DDP ranks other than 0 evaluate nothing
        return 0
    print()
    print(f"supernet        {result['space']} (mode={result['mode']}) on {result['dataset']}, step "
          f"{result['global_step']}" + (f" (resumed from {result['resumed_from']})" if result['resumed_from'] else ""))
    print(f"train loss      {result['train_loss_first']:.4f} (first 10% of steps) -> "
          f"{result['train_loss_last']:.4f} (last 10%), {result['steps_this_run']} steps in "
          f"{result['fit_seconds']} s")
    for op, acc in result["baselines"].items():
        print(f"all-{op:<12s}val accuracy {acc:.4f} (inherited weights)")
    randoms = [a["val_acc"] for name, a in result["archs"].items() if name.startswith("random")]
    if randoms:
        print(f"random subnets  val accuracy mean {sum(randoms) / len(randoms):.4f}, best {max(randoms):.4f} "
              f"({len(randoms)} archs)")
    print(f"checkpoint      {result['checkpoint']}")
    print(f"metrics         {cfg.output}/metrics.json")
    return 0


def cmd_train_supertransformer(args: argparse.Namespace) -> int:
    from .tasks.supertransformer import SuperTransformerConfig, train_supertransformer

    cfg = _recipe(args, SuperTransformerConfig)
    r = train_supertransformer(cfg)
    print()
    print(f"supertransformer {r['space']} (mode={r['mode']}), {r['updates']} updates"
          + (" (resumed)" if r["resumed"] else "") + f", {r['fit_seconds']} s; data {r['data']}")
    print(f"unigram model    valid loss {r['unigram_loss_nats']:.3f} nats/token (the bar to clear)")
    weights = "trained from scratch" if cfg.subnet else "inherited weights"
    for name, s in r["subnets"].items():
        print(f"{name:<16s} valid loss {s['valid']['loss_nats']:.3f} nats/token, test BLEU {s['test']['bleu']:.2f} "
              f"({s['test']['sentences']} sentences, {weights}); {s['params_M']:.2f}M params, "
              f"{s['macs_G'] * 1e3:.1f}M MACs ({s['mult_G'] * 1e3:.1f}M mult, {s['shift_G'] * 1e3:.1f}M shift), "
              f"Eyeriss {s['energy_mJ']:.2f} mJ, {s['latency_ms']:.2f} ms")
    first = next(iter(r["subnets"].values()), None)
    if first:
        print(f"BLEU signature   {first['test']['signature']}")
    print("cost             a 30-token sentence on the Eyeriss model (SPEC), embeddings and vocabulary projection "
          "not counted")
    print(f"checkpoint       {r['checkpoint']}")
    print(f"metrics          {cfg.output}/metrics.json")
    return 0


def cmd_fairseq_user_dir(args: argparse.Namespace) -> int:
    from .tasks.translation import USER_DIR

    print(USER_DIR)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from .tasks.retrain import RetrainConfig, retrain

    cfg = _recipe(args, RetrainConfig)
    r = retrain(cfg)
    if r.get("kind") == "translation":
        return _print_translation_retrain(r, cfg.output)
    cost = r["cost"]
    print()
    print(f"subnet          {r['arch_source']} on space {r['space']}: blocks {r['blocks']}, {r['params']} params"
          + (f", {r['quant_bits']}-bit fake quantisation" if r["quant_bits"] else ", float"))
    print(f"recipe          {r['recipe']}" + (f" (from supernet {r['supernet']})" if r["supernet"] else ""))
    print(f"train loss      {r['train_loss_first']:.4f} (first 10% of steps) -> {r['train_loss_last']:.4f} "
          f"(last 10%), {r['train_steps']} steps in {r['fit_seconds']} s")
    print(f"val accuracy    {r['val_acc']:.4f}")
    print(f"test accuracy   {r['test_acc']:.4f}")
    print(f"cost @{cost['bits']:<2d} bits   {cost['energy_mJ']:.4f} mJ, {cost['latency_ms']:.4f} ms (Eyeriss); "
          f"#Mult {cost['mult']}, #Add {cost['add']}, #Shift {cost['shift']}")
    print(f"checkpoint      {r['checkpoint']}")
    print(f"metrics         {cfg.output}/metrics.json")
    return 0


def _print_translation_retrain(r: dict[str, Any], output: str) -> int:
    s, inherited = r["scratch"], r["inherited"]
    print()
    print(f"subnet           {r['arch_source']} on space {r['space']}: {s['params_M']:.2f}M params, "
          f"{s['macs_G'] * 1e3:.1f}M MACs, Eyeriss {s['energy_mJ']:.3f} mJ, {s['latency_ms']:.3f} ms")
    print(f"recipe           that of {r['supernet']}: {r['updates']} updates" + (" (resumed)" if r["resumed"] else "")
          + f", lr {r['recipe']['lr']}, {r['fit_seconds']} s")
    print(f"from scratch     valid loss {s['valid']['loss_nats']:.3f} nats/token, test BLEU {s['test']['bleu']:.2f} "
          f"({s['test']['sentences']} sentences)")
    print(f"inherited        valid loss {inherited['valid']['loss_nats']:.3f} nats/token, test BLEU "
          f"{inherited['test']['bleu']:.2f} (the supernet's weights after {inherited['supernet_updates']} updates)")
    print(f"BLEU signature   {s['test']['signature']} (beam {s['test']['beam']}, length penalty {s['test']['lenpen']})")
    print(f"checkpoint       {r['checkpoint']}")
    print(f"metrics          {output}/metrics.json")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import check_data_dir, create_dataset, dataset_info, list_datasets
    from .data.translation import TranslationDataConfig

    if args.name == "translation":
        return _prepare_translation(args)
    given = [f"--{k.replace('_', '-')}" for k in _overrides(args, TranslationDataConfig)]
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
    from .data.translation import TranslationDataConfig, prepare_translation

    if args.data_dir is not None:
        raise ConfigError("--data-dir: is for image datasets; for translation give --binarized DIR (a "
                          "fairseq-binarised directory) or --source FILE (the trans-de-en dictionary)")
    cfg = _translation_data_config(args.config, _overrides(args, TranslationDataConfig))
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

    from .data.translation import TranslationDataConfig

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
    from .cost.eyeriss import EyerissConfig
    from .cost.profile import eyeriss_config

    options: dict[str, Any] = {}
    for item in raw:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _ProfileError(f"--option: bad value {item!r}; expected key=value, e.g. adder_on_chip=false")
        try:
            options[key.strip()] = _yaml_flag(value, f"--option {key.strip()}")
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

    from . import models  # noqa: F401  (registers the shiftadd_* models)
    from .ops import convert_model

    try:
        kwargs = _yaml_flag(args.model_kwargs, "--model-kwargs") if args.model_kwargs else {}
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
    from .cost.layerwise import space_records
    from .cost.profile import report_from_records
    from .space.spec import load_space

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

    from .cost.profile import report_from_records
    from .cost.profilers import trace_model

    try:
        options = _parse_options(args.option or [], args.bits)
        if args.space:
            return _profile_subnet(args, options)
        if args.arch:
            raise _ProfileError("--arch: goes with --space (the search space the architecture belongs to)")
        if args.workload:
            if args.model_kwargs or args.convert != "none" or args.input_size:
                raise _ProfileError("--workload: --model-kwargs, --convert and --input-size apply to --model only")
            from .cost.workloads import transformer_big

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


# --- plot -------------------------------------------------------------------------------------------------------------

def _plot_weights(args: argparse.Namespace) -> list[Any]:
    from .plots import check_figure_path, plot_weight_histograms, weight_fits, weight_shapes
    from .tasks.supernet import load_supernet

    check_figure_path(args.out, "--out")
    supernet, _ = load_supernet(args.supernet)
    layers = [name.strip() for name in args.layers.split(",")] if args.layers else None
    shapes = weight_shapes(supernet, layers)
    for name, fits in weight_fits(supernet, layers).items():
        print(f"{name:28s} " + "  ".join(f"{op}: " + ", ".join(f"{k}={v:.4g}" for k, v in fit.items())
                                         for op, fit in fits.items()))
        print(f"{'':28s} shape: " + "  ".join(f"{op}: " + ", ".join(f"{k}={v:.3g}" for k, v in stats.items())
                                              for op, stats in shapes[name].items()))
    return [plot_weight_histograms(supernet, args.out, layers)]


def _plot_subnet(args: argparse.Namespace) -> list[Any]:
    from .plots import check_figure_path, plot_subnet
    from .space.spec import SpaceSpec, load_space

    check_figure_path(args.out, "--out")
    spec = load_space(args.space)
    if not isinstance(spec, SpaceSpec):
        raise ValueError(f"--space: {args.space!r} is a translation space; `plot subnet` draws the layer plan of "
                         "image spaces only (a translation architecture is printed by `search-space --info`)")
    return [plot_subnet(spec, arch_argument(args.arch), args.out, args.title)]


def _plot_pareto(args: argparse.Namespace) -> list[Any]:
    from .plots import plot_pareto_pair

    data = json_argument(args.results, "--results")
    if isinstance(data, dict):
        records, baselines, best = data.get("records"), data.get("baselines"), data.get("best")
    else:
        records, baselines, best = data, None, None
    if not isinstance(records, list):
        raise ValueError(f"--results {args.results}: expected a list of records, or an object with a 'records' "
                         "list (and optional 'baselines' and 'best')")
    if baselines is not None and not isinstance(baselines, dict):
        raise ValueError(f"--results {args.results}: 'baselines' must map names to records")
    return plot_pareto_pair(records, args.out_dir, baselines, best, y=args.y)


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        paths = {"weights": _plot_weights, "subnet": _plot_subnet, "pareto": _plot_pareto}[args.what](args)
    except ValueError as err:
        print(f"nni-shiftadd plot {args.what}: error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


def _add_plot_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="figures: supernet weight histograms, an architecture, accuracy-cost fronts")
    kinds = p.add_subparsers(dest="what", required=True)
    w = kinds.add_parser("weights", help="Conv/Shift/Add weight histograms of a trained supernet (paper Fig. 3, 7)")
    w.add_argument("--supernet", required=True, metavar="CKPT", help="checkpoint of `train-supernet`")
    w.add_argument("--out", required=True, metavar="FILE.png")
    w.add_argument("--layers", default=None, metavar="NAMES", help="comma-separated weight pools, e.g. "
                   "stage0.layer0.spatial,stage2.layer1 (default: the 3x3 pool of each stage's first layer)")
    s = kinds.add_parser("subnet", help="diagram of one architecture (paper Fig. 8)")
    s.add_argument("--space", required=True, help="search space name or YAML path, e.g. cv_small")
    s.add_argument("--arch", required=True, metavar="JSON", help="architecture: a JSON file or inline JSON")
    s.add_argument("--out", required=True, metavar="FILE.png")
    s.add_argument("--title", default=None)
    r = kinds.add_parser("pareto", help="accuracy vs. energy and vs. latency with the Pareto front (paper Fig. 6)")
    r.add_argument("--results", required=True, metavar="JSON", help="a list of records (energy_mJ, latency_ms, "
                   "accuracy), or an object with 'records' and optional 'baselines' (name -> record) and 'best'")
    r.add_argument("--out-dir", required=True, metavar="DIR", help="writes pareto_energy.png, pareto_latency.png")
    r.add_argument("--y", default="accuracy", help="the metric to maximise (default accuracy)")
    p.set_defaults(func=cmd_plot)


# --- search: demo, register, search-space, trial, create ----------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .experiment.demo import DemoConfig, format_summary, load_demo_config, run_demo
    from .experiment.nnictl import ExperimentError

    cfg = load_demo_config(args.config, _overrides(args, DemoConfig))
    try:
        results = run_demo(cfg)
    except ExperimentError as err:
        print(f"nni-shiftadd demo: error: {err}", file=sys.stderr)
        return 1
    print(format_summary(results))
    return 0 if results.get("best") else 1


def cmd_ranking(args: argparse.Namespace) -> int:
    from .experiment.ranking import RankingConfig, run_and_print

    return run_and_print(_recipe(args, RankingConfig), args.quick)[0]


def cmd_latency_predictor(args: argparse.Namespace) -> int:
    from .cost.measured import LatencyPredictorConfig, build_latency_predictor

    cfg = _recipe(args, LatencyPredictorConfig)
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


def cmd_register(args: argparse.Namespace) -> int:
    from .experiment.nnictl import register

    print(register())
    print("tuner 'ShiftAddEvolution' can now be named in an nnictl config: tuner: {name: ShiftAddEvolution, "
          "classArgs: {space: cv_small, preset: cv_small}}")
    return 0


def cmd_search_space(args: argparse.Namespace) -> int:
    from .strategy.tuner import search_space_json

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
    from .space import count_subnets, load_space
    from .space.cv import supernet_parameters
    from .space.nlp_spec import TranslationSpaceSpec
    from .space.spec import valid_depths

    spec = load_space(space)
    if isinstance(spec, TranslationSpaceSpec):
        return _translation_summary(spec)
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

    from .space import count_subnets
    from .space.nlp import supernet_parameters

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
    from .tasks.trial import TrialConfig, run_trial

    cfg = from_dict(TrialConfig, _overrides(args, TrialConfig), "command line")
    try:
        run_trial(cfg, json_argument(args.arch, "--arch") if args.arch else None)
    except ValueError as err:
        print(f"nni-shiftadd trial: error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .experiment.nnictl import ExperimentError, check_address, create, free_port, listening_addresses

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


# --- the parsers: one adder per command, so that a command builds (and imports) only its own ------------------------

def _add_train_parser(sub: Any) -> None:
    from .tasks.classification import TrainConfig

    p = sub.add_parser("train", help="train an image classifier (optionally converted to Add/Shift layers)",
                       description="Train a timm-registered model on an image dataset with Lightning. Fields come "
                       "from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", help="training recipe (YAML), e.g. examples/fashion_mnist/hybrid_resnet20.yaml")
    _add_config_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def _add_train_supernet_parser(sub: Any) -> None:
    from .tasks.supernet import SupernetConfig

    p = sub.add_parser("train-supernet", help="one-shot training of a hybrid search space's supernet",
                       description="Train the single-path supernet of a search space (one uniformly sampled "
                       "architecture per step), then validate random subnets and the all-Conv/Shift/Add/Attn "
                       "baselines with inherited weights. Resumes exactly from <output>/checkpoints/last.ckpt "
                       "(resume: auto). Fields come from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", help="recipe (YAML), e.g. examples/fashion_mnist/supernet_cv_small.yaml")
    _add_config_flags(p, SupernetConfig)
    p.set_defaults(func=cmd_train_supernet)


def _add_train_supertransformer_parser(sub: Any) -> None:
    from .tasks.supertransformer import SuperTransformerConfig

    p = sub.add_parser("train-supertransformer", help="one-shot training of a translation space's SuperTransformer "
                       "with fairseq", description="Train the hybrid SuperTransformer of a translation search space "
                       "(one uniformly sampled subnet per update) with fairseq-train and the nni-shiftadd plugin, on "
                       "the trans-de-en pairs (prepared on first use) or any fairseq-binarised data (data.binarized); "
                       "then score the homogeneous and random subnets with inherited weights (validation loss, "
                       "sacrebleu BLEU). Run it again after a kill: it resumes from <output>/checkpoints. Fields come "
                       "from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", help="recipe (YAML), e.g. examples/translation/supernet_nlp_small.yaml")
    _add_config_flags(p, SuperTransformerConfig)
    p.set_defaults(func=cmd_train_supertransformer)


def _add_fairseq_user_dir_parser(sub: Any) -> None:
    p = sub.add_parser("fairseq-user-dir", help="print the folder to pass to fairseq-train --user-dir",
                       description="The fairseq plugin folder: fairseq-train DATA --user-dir \"$(nni-shiftadd "
                       "fairseq-user-dir)\" --task shiftadd_translation --arch shiftadd_nlp_small ...")
    p.set_defaults(func=cmd_fairseq_user_dir)


def _add_retrain_parser(sub: Any) -> None:
    from .tasks.retrain import RetrainConfig

    p = sub.add_parser("retrain", help="train one architecture of a search space from scratch",
                       description="Train the standalone network of an architecture (a JSON file, a baseline name "
                       "all_conv/all_shift/all_add/all_attn, or a mapping) from scratch with the supernet recipe "
                       "(DeiT defaults, or --supernet CKPT's), optionally with fake quantisation (--quant-bits); "
                       "then validate, test and cost it. With --supernet a SuperTransformer checkpoint "
                       "(train-supertransformer), the translation subnet is trained with fairseq and that recipe "
                       "(--max-updates, --lr change it) and its test BLEU is printed beside its inherited-weight BLEU. "
                       "Fields come from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", help="recipe (YAML), e.g. examples/fashion_mnist/retrain_cv_small.yaml")
    _add_config_flags(p, RetrainConfig)
    p.set_defaults(func=cmd_retrain)


def _add_data_parser(sub: Any) -> None:
    from .data.translation import TranslationDataConfig

    p = sub.add_parser("data", help="check that a dataset is present and print its splits; 'translation' prepares "
                       "the German-English pairs", description="Image datasets: check that the files are there and "
                       "print the splits. 'translation': extract the sentence pairs of the Debian package trans-de-en, "
                       "split them, tokenise them (sacremoses), learn a joint BPE (subword-nmt) and binarise them "
                       "with fairseq-preprocess into the cache, once per settings; the settings come from --config "
                       "(a translation recipe's 'data' block, or a YAML of these fields) and the flags below.")
    p.add_argument("name", nargs="?", default="all", help="dataset name, 'all', or 'translation'")
    p.add_argument("--data-dir", default=None, help="where the image dataset files are (default: system install)")
    p.add_argument("--config", default=None, help="translation: a recipe with a 'data' block, or a YAML of its fields")
    _add_config_flags(p, TranslationDataConfig)
    p.set_defaults(func=cmd_data)


def _add_kernels_parser(sub: Any) -> None:
    p = sub.add_parser("kernels", help="build the fast CPU adder kernel (cached) and report the backends in use")
    p.set_defaults(func=cmd_kernels)


def _add_profile_parser(sub: Any) -> None:
    p = sub.add_parser("profile", help="op counts, energy and latency of a model on the Eyeriss cost model",
                       description="Trace one forward pass of a timm-registered model (or a reference workload) and "
                       "cost every compute layer: #Params, #MACs, #Mult/#Add/#Shift (Table 4 conventions) and, with "
                       "--hardware eyeriss, energy per memory level and latency.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="timm model name, e.g. shiftadd_resnet20 or resnet50")
    what.add_argument("--workload", choices=["transformer_big"], help="a reference workload (paper Table 3)")
    what.add_argument("--space", help="a search space (name or YAML path): cost the subnet given by --arch")
    p.add_argument("--arch", default=None, metavar="JSON", help="with --space: the subnet, a JSON file or inline JSON")
    p.add_argument("--model-kwargs", default=None, metavar="YAML", help="keyword arguments of the model, e.g. "
                   "'{op: [conv, shift, add]}'")
    p.add_argument("--convert", choices=["none", "add", "shift"], default="none",
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
    p.set_defaults(func=cmd_profile)


def _add_demo_parser(sub: Any) -> None:
    from .experiment.demo import DemoConfig

    p = sub.add_parser("demo", help="the main job: train a supernet, search it with nnictl, print the best",
                       description="Train a supernet (the cv_small one on Fashion-MNIST by default; a translation "
                       "recipe such as examples/translation/demo.yaml trains a SuperTransformer on trans-de-en), run "
                       "the evolution search as an NNI experiment (nnictl create, web UI on 127.0.0.1), wait for its "
                       "trials and print the best architecture with its accuracy (or BLEU), energy, latency and op "
                       "counts beside the homogeneous baselines. Run it again after a kill: it resumes. Fields come "
                       "from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", default=None, help="demo recipe (YAML); default examples/fashion_mnist/demo.yaml")
    _add_config_flags(p, DemoConfig)
    p.set_defaults(func=cmd_demo)


def _add_ranking_parser(sub: Any) -> None:
    from .experiment.ranking import RankingConfig

    p = sub.add_parser("ranking", help="paper Table 5: how well each weight-sharing mode's supernet ranks subnets",
                       description="Train architectures of an image space stand-alone (two seeds for the seed "
                       "ceiling), supernets in the none/naive/hws modes with several seeds, and score every "
                       "architecture with inherited weights after BN recalibration; print Kendall tau, Pearson r, "
                       "Spearman rho and top-k precision per mode with bootstrap intervals, and the stand-alone "
                       "accuracy of each mode's search pick. Every trained network is cached in the output folder: "
                       "run the same command again to resume. Fields come from --config (YAML) and are overridden "
                       "by the flags below.")
    p.add_argument("--config", default=None, help="study recipe (YAML), e.g. examples/fashion_mnist/ranking_cv_small.yaml")
    p.add_argument("--quick", action="store_true", help="a small version in minutes (6 architectures, one supernet "
                   "seed, a few batches each) in <output>_quick: checks the pipeline, ranks nothing")
    _add_config_flags(p, RankingConfig)
    p.set_defaults(func=cmd_ranking)


def _add_latency_predictor_parser(sub: Any) -> None:
    from .cost.measured import LatencyPredictorConfig

    p = sub.add_parser("latency-predictor", help="measure subnets' latency on this device and fit HAT's predictor",
                       description="Sample architectures of an image space, time each subnet's forward pass on "
                       "this device (warm-up runs, trimmed mean; by default as a ratio to the all-Conv subnet run "
                       "beside it, which cancels a drifting machine speed), fit the 3 x 400 MLP latency predictor "
                       "and save it for the evolution's `latency: predictor` constraint; prints the held-out error. "
                       "Measurements are cached in <output>.measured.jsonl: run it again after a kill to resume. "
                       "Fields come from --config (YAML) and are overridden by the flags below.")
    p.add_argument("--config", default=None, help="recipe (YAML) with the fields below")
    _add_config_flags(p, LatencyPredictorConfig)
    p.set_defaults(func=cmd_latency_predictor)


def _add_register_parser(sub: Any) -> None:
    p = sub.add_parser("register", help="register the ShiftAddEvolution tuner with nnictl (nnictl algo register)")
    p.set_defaults(func=cmd_register)


def _add_search_space_parser(sub: Any) -> None:
    p = sub.add_parser("search-space", help="the NNI search-space JSON of a search-space YAML")
    p.add_argument("space", help="a shipped space name (cv_small, cv_imagenet, nlp_small, ...) or a YAML path")
    p.add_argument("--out", default=None, help="write to this file instead of printing")
    p.add_argument("--info", action="store_true",
                   help="print a summary instead: stages, subnet count, supernet parameters per sharing mode")
    p.set_defaults(func=cmd_search_space)


def _add_trial_parser(sub: Any) -> None:
    from .tasks.trial import TrialConfig

    p = sub.add_parser("trial", help="evaluate one architecture with supernet weights and report it to NNI",
                       description="The trial command of a search: under NNI it takes the architecture from "
                       "nni.get_next_parameter() and reports accuracy (image spaces) or validation loss and BLEU "
                       "(translation), energy, latency and op counts; otherwise pass --arch.")
    p.add_argument("--arch", default=None, help="the architecture: inline JSON or a JSON file (outside NNI)")
    _add_config_flags(p, TrialConfig)
    p.set_defaults(func=cmd_trial)


def _add_create_parser(sub: Any) -> None:
    p = sub.add_parser("create", help="nnictl create with the web UI and REST API on 127.0.0.1 only")
    p.add_argument("--config", required=True, help="an nnictl experiment config, e.g. examples/fashion_mnist/config.yml")
    p.add_argument("--port", type=int, default=8080, help="web UI port (the next free one if taken)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.set_defaults(func=cmd_create)


#: Every command and the function that adds its parser, in the order ``--help`` lists them.
COMMANDS: dict[str, Any] = {
    "train": _add_train_parser, "train-supernet": _add_train_supernet_parser,
    "train-supertransformer": _add_train_supertransformer_parser, "fairseq-user-dir": _add_fairseq_user_dir_parser,
    "retrain": _add_retrain_parser, "data": _add_data_parser, "kernels": _add_kernels_parser,
    "profile": _add_profile_parser, "plot": _add_plot_parser, "demo": _add_demo_parser,
    "register": _add_register_parser, "search-space": _add_search_space_parser, "trial": _add_trial_parser,
    "create": _add_create_parser, "ranking": _add_ranking_parser, "latency-predictor": _add_latency_predictor_parser,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every command's, or with ``command`` only that one's (its recipe schema is all it
    imports: a trial starts in seconds instead of importing Lightning for the training commands)."""
    parser = argparse.ArgumentParser(prog="nni-shiftadd", description="ShiftAddNAS for NNI: hybrid Shift/Add/Conv/"
                                     "Attn networks and their search.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, add in COMMANDS.items():
        if command is None or name == command:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a bad input or a failed run ends in one ``error:`` line and exit status 2 (1 for an
    NNI experiment that failed), never a traceback (set ``NNI_SHIFTADD_DEBUG=1`` to see one); SIGTERM and SIGINT
    stop it with one line saying what was kept and status 143 / 130 (:mod:`nni_shiftadd.stopping`)."""
    import os

    from . import stopping
    from .lock import OutputLockedError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    try:
        with stopping.handling():
            return args.func(args)
    except (stopping.Stopped, SystemExit):
        # a signal (Lightning ends a stopped fit with a SystemExit whose status is 0): say so, exit 128 + signal
        signum = stopping.received()
        if signum is None:
            raise
        print(f"nni-shiftadd {args.command}: {stopping.stop_message(signum)}", file=sys.stderr, flush=True)
        return 128 + signum
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FloatingPointError,
            OutputLockedError) as err:
        # ValueError covers ConfigError, CheckpointError, OutputPathError and the checks of every recipe
        if os.environ.get("NNI_SHIFTADD_DEBUG"):
            raise
        print(f"nni-shiftadd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
