"""Search-space definitions (YAML), shipped inside the wheel as ``nni_shiftadd.search_spaces``."""
