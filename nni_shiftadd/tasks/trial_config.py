"""The settings of a search's trial (the flags of ``nni-shiftadd trial``; the trial itself is :mod:`.trial`), in a
module of their own: a trial that hands itself to a warm trial host parses them without importing torch."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrialConfig:
    """Schema of the trial settings (flags of ``nni-shiftadd trial``)."""

    supernet: str = "runs/supernet_cv_small/checkpoints/last.ckpt"
    space: str | None = None  # when given, the supernet must have been trained on this space
    split: str = "val"
    batch_size: int = 256
    eval_batches: int | None = 10
    calibration_batches: int = 10
    bits: int = 32
    eyeriss: str = "shiftaddnas"  # the Eyeriss model's preset for the reported energy and latency
    threads: int | None = None
    seed: int = 0
    data_dir: str | None = None
    bleu_sentences: int | None = 200  # translation: BLEU on the split's first N sentences (null: all; 0: none)
    beam: int = 4  # translation: beam size of the BLEU search
    lenpen: float = 0.6  # translation: its length penalty

    def validate(self) -> None:
        if self.split not in ("val", "test"):
            raise ValueError(f"field 'split': got {self.split!r}; expected 'val' or 'test'")
        if self.batch_size < 1 or self.calibration_batches < 0:
            raise ValueError(f"fields 'batch_size', 'calibration_batches': must be >= 1 and >= 0, got "
                             f"{self.batch_size}, {self.calibration_batches}")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise ValueError(f"field 'eval_batches': must be null or >= 1, got {self.eval_batches}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"field 'threads': must be null or >= 1, got {self.threads}")
        if self.bits not in (8, 16, 32):
            raise ValueError(f"field 'bits': got {self.bits}; expected 8, 16 or 32")
        from ..cost.metrics import check_eyeriss_preset

        check_eyeriss_preset(self.eyeriss)
        if self.bleu_sentences is not None and self.bleu_sentences < 0:
            raise ValueError(f"field 'bleu_sentences': must be null (all) or >= 0 (0: no BLEU), got "
                             f"{self.bleu_sentences}")
        if self.beam < 1:
            raise ValueError(f"field 'beam': must be >= 1, got {self.beam}")
