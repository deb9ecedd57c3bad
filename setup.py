"""nni-shiftadd: ShiftAddNAS (hybrid Attn/Conv/Shift/Add networks and their search) as a plugin for NNI 3.0."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
ENAS_REQUIRES = ["tianshou==0.4.11", "gym==0.26.2"]

setup(
    name="nni-shiftadd",
    version="0.1.0",
    description="ShiftAddNAS for Microsoft NNI: hybrid multiplication-reduced networks, fast Shift/Add operators, "
                "an Eyeriss cost model and hardware-constrained search",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["nni_shiftadd", "nni_shiftadd.*"])
    + ["nni_shiftadd.search_spaces", "nni_shiftadd.strategies"],
    # The YAML folders live at the top of the repository and ship inside the package.
    package_dir={"nni_shiftadd.search_spaces": "search_spaces", "nni_shiftadd.strategies": "strategies"},
    package_data={
        "nni_shiftadd.kernels": ["*.cpp"],
        "nni_shiftadd.experiment": ["*.js"],
        "nni_shiftadd.search_spaces": ["*.yaml"],
        "nni_shiftadd.strategies": ["*.yaml", "*.yml"],
    },
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "nni==3.0",
        "timm>=1.0,<2",
        "pytorch_lightning>=2.0,<3",
        "setuptools<81",  # nnictl imports pkg_resources
        "sacrebleu>=2.0",
        "pyyaml>=6.0",
        "safetensors>=0.4",
        "matplotlib>=3.7",
        "scikit-learn>=1.2",
        "triton>=3.0; platform_system == 'Linux' and platform_machine == 'x86_64'",
        # translation: tokenisation and BPE, and what fairseq needs at run time. fairseq itself (fairseq-fixed,
        # no wheel for Python 3.11) is built by install.sh with --no-deps --no-build-isolation: its torchaudio
        # requirement would pull another torch.
        "sacremoses>=0.1",
        "subword-nmt>=0.3.8",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "bitarray",
        "cython",
        "regex",
    ],
    extras_require={
        # NNI 3.0's ENAS controller is written against tianshou 0.4 (and the gym it uses)
        "enas": ENAS_REQUIRES,
        # pytest 9.2 drops the node-id suffix through which pytest-xdist 3.8 groups tests (pytest-xdist#1386)
        "test": ["pytest>=7,<9.2", "pytest-xdist>=3.5", "selenium>=4.20", "mkdocs>=1.6", "import-linter>=2.0",
                 *ENAS_REQUIRES],
    },
    entry_points={"console_scripts": ["nni-shiftadd=nni_shiftadd.cli:main"]},
)
