"""Every dashboard figure, as pure functions ``(Results, options) -> plotly Figure`` (no Dash).

One module per view, plus :mod:`~dashboard.figures.common` (template, palettes, hover and the
cell layer shared by all of them). Everything public is re-exported here, so pages and tests use
``from dashboard import figures; figures.embedding_figure(...)``.
"""

from dashboard.figures.coherence import (
    ECDF_POINTS,
    coherence_cdf_figure,
    coherence_ecdf,
    top_bottom_coherence,
)
from dashboard.figures.common import (
    DIVERGING,
    SEQUENTIAL,
    TEMPLATE,
    category_colors,
    cell_layer_split,
    cell_type_colors,
    empty_figure,
    typed,
)
from dashboard.figures.embedding import (
    CONFIDENCE_ALPHA,
    SOURCE_RGB,
    STREAM_WIDTHS,
    agreement_figure,
    embedding_figure,
    recolor_patch,
    speed_classes,
)
from dashboard.figures.genes import (
    FIT_COLORS,
    MS_LABEL,
    MU_LABEL,
    STATE_COLORS,
    baseline_agreement_figure,
    fitted_curve,
    gene_over_time_figure,
    gene_velocity_embedding_figure,
    permutation_effect_figure,
    phase_portrait_figure,
    rate_label,
)
from dashboard.figures.ground_truth import (
    calibration_figure,
    ground_truth_figure,
    ground_truth_metrics,
    ground_truth_summary,
    uncertainty_calibration_summary,
)
from dashboard.figures.heatmap import (
    MAX_COLUMNS,
    N_CONVOLVE,
    HeatmapData,
    column_bins,
    heatmap_data,
    heatmap_figure,
    moving_average,
)
from dashboard.figures.permutation import (
    KDE_POINTS,
    permutation_density_figure,
    permutation_heatmap_figure,
    permutation_kde,
)
from dashboard.figures.portraits import (
    POINTS_PER_PANEL,
    downsample_cells,
    portrait_cells,
    portrait_grid_figure,
)
from dashboard.figures.rates import mse_ratio_figure, transcription_rate_figure
from dashboard.figures.training import training_curve_figure
from dashboard.figures.uncertainty import uncertainty_by_type_figure, uncertainty_figures

__all__ = [
    "CONFIDENCE_ALPHA",
    "DIVERGING",
    "ECDF_POINTS",
    "FIT_COLORS",
    "KDE_POINTS",
    "MAX_COLUMNS",
    "MS_LABEL",
    "MU_LABEL",
    "N_CONVOLVE",
    "POINTS_PER_PANEL",
    "SEQUENTIAL",
    "SOURCE_RGB",
    "STATE_COLORS",
    "STREAM_WIDTHS",
    "TEMPLATE",
    "HeatmapData",
    "agreement_figure",
    "baseline_agreement_figure",
    "calibration_figure",
    "category_colors",
    "cell_layer_split",
    "cell_type_colors",
    "coherence_cdf_figure",
    "coherence_ecdf",
    "column_bins",
    "downsample_cells",
    "embedding_figure",
    "empty_figure",
    "fitted_curve",
    "gene_over_time_figure",
    "gene_velocity_embedding_figure",
    "ground_truth_figure",
    "ground_truth_metrics",
    "ground_truth_summary",
    "heatmap_data",
    "heatmap_figure",
    "moving_average",
    "mse_ratio_figure",
    "permutation_density_figure",
    "permutation_effect_figure",
    "permutation_heatmap_figure",
    "permutation_kde",
    "phase_portrait_figure",
    "portrait_cells",
    "portrait_grid_figure",
    "rate_label",
    "recolor_patch",
    "speed_classes",
    "top_bottom_coherence",
    "training_curve_figure",
    "transcription_rate_figure",
    "typed",
    "uncertainty_by_type_figure",
    "uncertainty_calibration_summary",
    "uncertainty_figures",
]
