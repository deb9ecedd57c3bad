"""The package's layers import downwards only and nothing imports in a circle (issue 26): the contracts of
``.importlinter`` (``lint-imports``), and a search of the import graph for cycles between modules."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layering_contracts_hold() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    run = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "2 kept" in run.stdout, run.stdout[-2000:]


def test_no_module_imports_in_a_circle() -> None:
    import grimp

    graph = grimp.build_graph("nni_shiftadd")
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                circles.append(" -> ".join((module, *back)))
    assert not circles, "\n".join(circles[:10])


def test_a_trials_imports_leave_nnis_oneshot_package_unloaded() -> None:
    """A search's trial (build the space, freeze a subnet, cost it for either space kind) never needs a one-shot twin,
    and NNI's one-shot package (with tianshou and numba behind it) is slow to import."""
    code = """
import sys
import nni_shiftadd.tasks.trial, nni_shiftadd.tasks.supernet, nni_shiftadd.cli
from nni_shiftadd.cost.metrics import space_cost_fn
from nni_shiftadd.space import baseline_arch, load_space
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.space.nlp import HybridNLPSpace
spec = load_space("cv_small")
arch = baseline_arch(spec, "conv")
HybridCVSpace(spec, "hws").freeze(arch)
space_cost_fn(spec)(arch)
nlp = load_space("nlp_tiny")
HybridNLPSpace(nlp, 100).freeze(nlp.random_arch(0))
print(sorted(m for m in sys.modules if m.startswith(("nni.nas.oneshot", "tianshou"))))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout[-2000:]
