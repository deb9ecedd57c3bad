"""fairseq's ``--user-dir``: registers the ``shiftadd_supertransformer`` model (with its architecture presets) and
the ``shiftadd_translation`` task. fairseq imports this folder as a top-level module, so the registrations live in
the package modules, imported here by their full names (and registered once however often they are imported)."""
import nni_shiftadd.tasks.translation.model  # noqa: F401
import nni_shiftadd.tasks.translation.task  # noqa: F401
