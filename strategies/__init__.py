"""Search-strategy presets and ``nnictl algo register`` meta files (YAML), shipped as ``nni_shiftadd.strategies``."""
