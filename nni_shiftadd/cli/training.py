"""Training commands: ``train``, ``train-supernet``, ``train-supertransformer``, ``retrain`` and
``fairseq-user-dir``."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ._command import Command, recipe

def cmd_train(args: argparse.Namespace) -> int:
    from ..tasks.classification import TrainConfig, train

    cfg = recipe(args, TrainConfig)
    result = train(cfg)
    print()
    print(f"model           {result['model']} (convert={result['convert']}) layers {result['ops']}")
    print(f"adder kernels   {result['adder_backend']}")
    print(_train_line(result))
    print(f"val accuracy    {result['val_acc']:.4f}")
    print(f"test accuracy   {result['test_acc']:.4f}")
    print(f"checkpoint      {result['checkpoint']}")
    print(f"metrics         {cfg.output}/metrics.json")
    return 0


def cmd_train_supernet(args: argparse.Namespace) -> int:
    from ..tasks.supernet import SupernetConfig, train_supernet

    cfg = recipe(args, SupernetConfig)
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
    from ..tasks.supertransformer import SuperTransformerConfig, train_supertransformer

    cfg = recipe(args, SuperTransformerConfig)
    r = train_supertransformer(cfg)
    print()
    print(f"supertransformer {r['space']} (mode={r['mode']}), {r['updates']} updates"
          + (f" (resumed; {r['fit_seconds']} s this run)" if r["resumed"] else "")
          + f", {r['train_seconds']} s of training; data {r['data']}")
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
    from ..tasks.translation import USER_DIR

    print(USER_DIR)
    return 0


def _train_line(r: dict[str, Any]) -> str:
    """The training loss of this run's steps, and where the run resumed (an image ``train`` or ``retrain``)."""
    resumed = (f" (resumed from {r['resumed_from']}; {r['train_steps']} steps in all)" if r["resumed_from"]
               else "")
    return (f"train loss      {r['train_loss_first']:.4f} (first 10% of steps) -> {r['train_loss_last']:.4f} "
            f"(last 10%), {r['steps_this_run']} steps in {r['fit_seconds']} s{resumed}")


def cmd_retrain(args: argparse.Namespace) -> int:
    from ..tasks.retrain import RetrainConfig, retrain

    cfg = recipe(args, RetrainConfig)
    r = retrain(cfg)
    return _RETRAIN_REPORTS.get(r["kind"], _print_json)(r, cfg.output)


def _print_image_retrain(r: dict[str, Any], output: str) -> int:
    cost = r["cost"]
    print()
    print(f"subnet          {r['arch_source']} on space {r['space']}: blocks {r['blocks']}, {r['params']} params"
          + (f", {r['quant_bits']}-bit fake quantisation" if r["quant_bits"] else ", float"))
    print(f"recipe          {r['recipe']}" + (f" (from supernet {r['supernet']})" if r["supernet"] else ""))
    print(_train_line(r))
    print(f"val accuracy    {r['val_acc']:.4f}")
    print(f"test accuracy   {r['test_acc']:.4f}")
    print(f"cost @{cost['bits']:<2d} bits   {cost['energy_mJ']:.4f} mJ, {cost['latency_ms']:.4f} ms (Eyeriss); "
          f"#Mult {cost['mult']}, #Add {cost['add']}, #Shift {cost['shift']}")
    print(f"checkpoint      {r['checkpoint']}")
    print(f"metrics         {output}/metrics.json")
    return 0


def _print_translation_retrain(r: dict[str, Any], output: str) -> int:
    s, inherited = r["scratch"], r["inherited"]
    print()
    print(f"subnet           {r['arch_source']} on space {r['space']}: {s['params_M']:.2f}M params, "
          f"{s['macs_G'] * 1e3:.1f}M MACs, Eyeriss {s['energy_mJ']:.3f} mJ, {s['latency_ms']:.3f} ms at "
          f"{r['bits']} bits" + (f", {r['quant_bits']}-bit fake quantisation" if r["quant_bits"] else ", float"))
    print(f"recipe           that of {r['supernet']}: {r['updates']} updates" + (" (resumed)" if r["resumed"] else "")
          + f", lr {r['recipe']['lr']}, {r['fit_seconds']} s")
    print(f"from scratch     valid loss {s['valid']['loss_nats']:.3f} nats/token, test BLEU {s['test']['bleu']:.2f} "
          f"({s['test']['sentences']} sentences)")
    print(f"inherited        valid loss {inherited['valid']['loss_nats']:.3f} nats/token, test BLEU "
          f"{inherited['test']['bleu']:.2f} (the supernet's float weights after {inherited['supernet_updates']} "
          "updates)")
    print(f"BLEU signature   {s['test']['signature']} (beam {s['test']['beam']}, length penalty {s['test']['lenpen']})")
    print(f"checkpoint       {r['checkpoint']}")
    print(f"metrics          {output}/metrics.json")
    return 0


def _print_json(r: dict[str, Any], output: str) -> int:
    print(json.dumps(r, indent=2, default=str))
    print(f"metrics          {output}/metrics.json")
    return 0


#: How ``retrain`` reports its result, by the space kind it names (another kind's as JSON).
_RETRAIN_REPORTS: dict[str, Callable[[dict[str, Any], str], int]] = {
    "image_classification": _print_image_retrain, "translation": _print_translation_retrain}


COMMANDS: list[Command] = [
    Command("train", "train an image classifier (optionally converted to Add/Shift layers)", cmd_train,
            description="Train a timm-registered model on an image dataset with Lightning. Run it again after a kill: "
            "it resumes exactly from <output>/checkpoints (resume: auto). Fields come from --config (YAML) and are "
            "overridden by the flags below.",
            schema=".tasks.classification:TrainConfig",
            config="training recipe (YAML), e.g. examples/fashion_mnist/hybrid_resnet20.yaml"),
    Command("train-supernet", "one-shot training of a hybrid search space's supernet", cmd_train_supernet,
            description="Train the supernet of a search space (one uniformly sampled architecture per step, or the "
            "paths of the recipe's sampling technique), then validate random subnets and the all-Conv/Shift/Add/Attn "
            "baselines with inherited weights. Resumes exactly from <output>/checkpoints/last.ckpt (resume: auto). "
            "Fields come from --config (YAML) and are overridden by the flags below.",
            schema=".tasks.supernet:SupernetConfig",
            config="recipe (YAML), e.g. examples/fashion_mnist/supernet_cv_small.yaml"),
    Command("train-supertransformer", "one-shot training of a translation space's SuperTransformer with fairseq",
            cmd_train_supertransformer,
            description="Train the hybrid SuperTransformer of a translation search space (one uniformly sampled "
            "subnet per update) with fairseq-train and the nni-shiftadd plugin, on the trans-de-en pairs (prepared on "
            "first use) or any fairseq-binarised data (data.binarized); then score the homogeneous and random subnets "
            "with inherited weights (validation loss, sacrebleu BLEU). Run it again after a kill: it resumes from "
            "<output>/checkpoints. Fields come from --config (YAML) and are overridden by the flags below.",
            schema=".tasks.supertransformer:SuperTransformerConfig",
            config="recipe (YAML), e.g. examples/translation/supernet_nlp_small.yaml"),
    Command("fairseq-user-dir", "print the folder to pass to fairseq-train --user-dir", cmd_fairseq_user_dir,
            description="The fairseq plugin folder: fairseq-train DATA --user-dir \"$(nni-shiftadd "
            "fairseq-user-dir)\" --task shiftadd_translation --arch shiftadd_nlp_small ..."),
    Command("retrain", "train one architecture of a search space from scratch", cmd_retrain,
            description="Train the standalone network of an architecture (a JSON file, a baseline name "
            "all_conv/all_shift/all_add/all_attn, or a mapping) from scratch with the supernet recipe (DeiT defaults, "
            "or --supernet CKPT's), optionally with fake quantisation (--quant-bits); then validate, test and cost "
            "it; run it again after a kill and it resumes exactly from <output>/checkpoints. With --supernet a SuperTransformer checkpoint (train-supertransformer), the translation subnet is "
            "trained with fairseq and that recipe (--max-updates, --lr change it) and its test BLEU is printed beside "
            "its inherited-weight BLEU. Fields come from --config (YAML) and are overridden by the flags below.",
            schema=".tasks.retrain:RetrainConfig",
            config="recipe (YAML), e.g. examples/fashion_mnist/retrain_cv_small.yaml"),
]
