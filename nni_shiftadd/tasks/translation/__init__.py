"""Translation with fairseq: the thin plugin that makes the hybrid SuperTransformer (plain PyTorch, in
:mod:`nni_shiftadd.nn.transformer` and :mod:`nni_shiftadd.space.nlp`) a fairseq model and task.

- :mod:`.model`: the registered model ``shiftadd_supertransformer`` and its architecture presets;
- :mod:`.task`: the registered task ``shiftadd_translation`` (one uniformly sampled subnet per update);
- ``shiftadd_fairseq_plugin/``: the ``--user-dir`` folder fairseq imports (``nni-shiftadd fairseq-user-dir``).

Importing this package does not import fairseq; its modules do.
"""
from pathlib import Path

#: The folder to pass to ``fairseq-train --user-dir`` (and ``fairseq-generate``).
USER_DIR = Path(__file__).resolve().parent / "shiftadd_fairseq_plugin"
