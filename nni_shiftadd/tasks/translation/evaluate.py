"""A translation subnet scored with the weights it inherits from a trained SuperTransformer: validation loss
(teacher forcing) and corpus BLEU of beam search on the test split, BPE removed and Moses-detokenised, by
sacrebleu against the untokenised references (its signature goes with the score).

The BLEU here is sacrebleu's (13a tokenisation of detokenised text), not the tokenised, compound-split BLEU that
HAT and the paper report for WMT'14 En-De, which runs a few points higher on the same output.
"""
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...checkpoint import CheckpointError, load_checkpoint
from ...data.translation import detokenise


def supertransformer_data(checkpoint: str | Path) -> str | None:
    """The data directory a checkpoint of the fairseq model ``shiftadd_supertransformer`` was trained on, or ``None``
    for any other checkpoint; read memory-mapped, without loading its tensors (``CheckpointError`` naming the path
    if it is unreadable)."""
    cfg = load_checkpoint(checkpoint, mmap=True).get("cfg")
    model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model_cfg, dict) or not {"space", "mode", "subnet"} <= set(model_cfg):
        return None
    task_cfg = cfg.get("task")
    return str(task_cfg.get("data")) if isinstance(task_cfg, dict) else ""


def is_supertransformer(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` is one of the fairseq model ``shiftadd_supertransformer`` (the translation kind's
    supernets, :mod:`nni_shiftadd.tasks.kinds`)."""
    return supertransformer_data(checkpoint) is not None


def load_trained(checkpoint: str | Path, data_bin: str | Path) -> tuple[Any, Any]:
    """The ``shiftadd_supertransformer`` model of a fairseq checkpoint and its task, reading ``data_bin``.

    The checkpoint is read weights-only (``CheckpointError`` naming the path if it is truncated, corrupt, or not a
    checkpoint of this model); the model is built with the dictionary of ``data_bin``."""
    from ...data.translation import import_fairseq

    if supertransformer_data(checkpoint) is None:
        raise CheckpointError(f"{checkpoint}: not a checkpoint of the fairseq model shiftadd_supertransformer "
                              "(`nni-shiftadd train-supertransformer` or fairseq-train --arch shiftadd_nlp_small)")
    import_fairseq()
    from fairseq import checkpoint_utils

    from . import model as _model  # noqa: F401  (registers the model and the task)
    from . import task as _task  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                    arg_overrides={"data": str(data_bin)})
    return models[0].eval(), task


def _batches(task: Any, split: str, max_tokens: int, limit: int | None = None) -> Any:
    """The batches of ``split`` (at most ``max_tokens`` tokens each, in fairseq's length order); with ``limit`` of
    its first ``limit`` sentences by id, i.e. in the split's own order (a fixed sample, not the shortest ones).

    fairseq breaks ties between sentences of one length with NumPy's global generator; it is seeded here, with fairseq's
    own ``numpy_seed``, so that a subnet's batches, and so its loss and BLEU, are the same in every
    process."""
    from fairseq.data import data_utils

    task.load_dataset(split)
    dataset = task.dataset(split)
    with data_utils.numpy_seed(0):
        indices = dataset.ordered_indices()
    if limit is not None:
        indices = indices[indices < limit]
    for batch in dataset.batch_by_size(indices, max_tokens=max_tokens):
        yield dataset.collater([dataset[int(i)] for i in batch])


@torch.no_grad()
def validation_loss(model: Any, task: Any, split: str = "valid", max_tokens: int = 4096) -> dict[str, float]:
    """Mean token cross-entropy of ``split`` under teacher forcing, in nats and bits (fairseq reports bits)."""
    pad = task.target_dictionary.pad()
    total, tokens = 0.0, 0
    for sample in _batches(task, split, max_tokens):
        logits = model(**sample["net_input"])[0]
        target = sample["target"]
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=pad,
                                       reduction="sum"))
        tokens += int(target.ne(pad).sum())
    nats = total / max(tokens, 1)
    return {"loss_nats": nats, "loss_bits": nats / math.log(2), "ppl": perplexity(nats), "tokens": tokens}


def perplexity(nats: float) -> float:
    """``exp(nats)``, ``inf`` where that overflows a float (a diverged or untrained model) instead of an error."""
    return math.exp(nats) if nats < math.log(1.7e308) else math.inf


@torch.no_grad()
def bleu(model: Any, task: Any, split: str = "test", references: Path | None = None, beam: int = 4,
         lenpen: float = 0.6, max_tokens: int = 4096, limit: int | None = None) -> dict[str, Any]:
    """Corpus BLEU (sacrebleu) of beam search on ``split``; ``references``: the folder of the untokenised
    ``<split>.<target language>`` (else the binarised target, de-BPE'd and detokenised, is the reference)."""
    from argparse import Namespace

    import sacrebleu

    tgt_dict, lang = task.target_dictionary, task.cfg.target_lang
    generator = task.build_generator([model], Namespace(beam=beam, lenpen=lenpen, max_len_a=1.2, max_len_b=10))
    raw = (references / f"{split}.{lang}").read_text(encoding="utf-8").splitlines() if references else None
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    start = time.perf_counter()
    for sample in _batches(task, split, max_tokens, limit):
        outputs = task.inference_step(generator, [model], sample)
        for i, sample_id in enumerate(sample["id"].tolist()):
            best = outputs[i][0]["tokens"]
            hyps[sample_id] = tgt_dict.string(best, bpe_symbol="@@ ", extra_symbols_to_ignore={tgt_dict.eos()})
            if raw is None:
                target = sample["target"][i]
                refs[sample_id] = tgt_dict.string(target[target.ne(tgt_dict.pad())], bpe_symbol="@@ ",
                                                  extra_symbols_to_ignore={tgt_dict.eos()})
    ids = sorted(hyps)
    hyp_text = detokenise([hyps[i] for i in ids], lang)
    ref_text = [raw[i] for i in ids] if raw is not None else detokenise([refs[i] for i in ids], lang)
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(hyp_text, [ref_text])
    return {"bleu": round(score.score, 2), "signature": str(metric.get_signature()), "sentences": len(ids),
            "references": "untokenised" if raw is not None else "binarised target, de-BPE'd and detokenised",
            "beam": beam, "lenpen": lenpen, "seconds": round(time.perf_counter() - start, 1),
            "examples": [{"hyp": hyp_text[k], "ref": ref_text[k]} for k in range(min(3, len(ids)))]}


def evaluate_subnet(model: Any, task: Any, arch: dict[str, Any] | None, references: Path | None = None, *,
                    beam: int = 4, lenpen: float = 0.6, max_tokens: int = 4096,
                    test_limit: int | None = None) -> dict[str, Any]:
    """Validation loss and test BLEU of ``arch`` with inherited weights (``None``: the model as it is, a
    standalone subnet); ``ValueError`` naming the label for an architecture outside the space."""
    if arch is not None:
        model.activate(arch)
    model.eval()
    out = {"valid": validation_loss(model, task, "valid", max_tokens)}
    out["test"] = bleu(model, task, "test", references, beam, lenpen, max_tokens, test_limit)
    return out
