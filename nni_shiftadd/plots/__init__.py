"""Figures of ShiftAddNAS results (matplotlib; PNG by default), one module per kind:

- :mod:`.weights`: histograms of a supernet's Conv / Shift / Add weights with fitted Gaussian / Laplace densities
  (paper Fig. 3 and Fig. 7), to check what heterogeneous weight sharing did;
- :mod:`.subnet`: diagram of one architecture, layers by resolution, coloured by block type (paper Fig. 8);
- :mod:`.pareto`: accuracy against energy / latency of a search, with the Pareto front, the homogeneous baselines
  and the chosen architecture (paper Fig. 6);
- :mod:`.score_cost`: retrained networks' top-1 or BLEU against energy or FLOPs, one line per family (paper Fig. 5, 6).

Figures are built without ``pyplot``, so nothing here touches the global matplotlib backend.
"""
from .pareto import pareto_front, plot_pareto, plot_pareto_pair
from .score_cost import plot_score_cost
from .subnet import OP_COLORS, check_figure_path, plot_subnet, save_figure
from .weights import plot_weight_histograms, shape_stats, weight_fits, weight_pools, weight_shapes

__all__ = ["OP_COLORS", "pareto_front", "plot_score_cost", "plot_pareto", "plot_pareto_pair", "plot_subnet",
           "plot_weight_histograms", "check_figure_path", "save_figure", "shape_stats", "weight_fits", "weight_pools", "weight_shapes"]
