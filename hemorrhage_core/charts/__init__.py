"""Tidy DataFrame -> Plotly figure. No Streamlit and no SQL here, so every chart is testable and exportable.

One visual language: the original model is always blue, the modified one always red, a mitigated one teal (the
mitigation family's colour), each method family has
its own colour (several runs of one family get shades and dashes of it), axes carry units, and
perplexity-like quantities use log scales because collapsed models reach thousands. Backgrounds are
transparent so charts read in Streamlit's light and dark themes; exports are rendered on white.

Charts live in modules by area (style, profile, compare, paper, mitigation, outliers, tasks, export), all imported
here: callers write `from hemorrhage_core import charts` and `charts.layer_loss_chart(...)`.
"""

from .compare import metric_bars_chart, quality_memory_chart, sweep_chart  # noqa: F401
from .export import captioned, export_bytes  # noqa: F401
from .mitigation import attention_pair_heatmap, kl_overlay_chart, recovery_bars  # noqa: F401
from .outliers import activation_outliers_chart  # noqa: F401
from .paper import decoding_heatmap, paper_chart, paper_overlay_chart, step_kl_chart  # noqa: F401
from .profile import (  # noqa: F401
    DECODING_PANELS,
    attention_heatmap,
    attention_maps_chart,
    cascade_chart,
    clicked_cell,
    decoding_chart,
    kl_cdf_chart,
    kl_distribution_chart,
    layer_loss_chart,
    module_ranking_chart,
    perplexity_chart,
)
from .style import (  # noqa: F401
    DASHES,
    FAMILY_COLORS,
    FONT,
    MITIGATED,
    MODIFIED,
    NEUTRAL,
    ORIGINAL,
    TEMPLATE,
    TEMPLATES,
    THRESHOLDS,
    run_styles,
    shade,
    themed,
)
from .tasks import flip_matrix_chart, paper_task_chart, task_accuracy_chart  # noqa: F401
