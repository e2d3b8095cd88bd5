"""Stage 3, quality: the teacher's cross-validation outputs in, a quality classifier out.

Learns, from the teacher's out-of-fold predictions of the labeled cases (plus synthetic corruptions of them), to
predict each pseudo-label's IoU per organ from signals available on an unlabeled scan; scores new predictions.
Imports the shared top-level modules and the conversion and training stages.

Modules: ``features`` (per-organ signals), ``corrupt`` (synthetic corruptions), ``table`` (teacher CV outputs ->
training table), ``model`` (fitting, grouped CV), ``evaluate`` (metrics, baselines, report), ``score`` (model file,
scoring over in-memory arrays), ``commands`` (``nnunet-medaka qc train|score|evaluate``).
"""
from nnunet_medaka.quality.score import QualityModel, accept, check_compatible, load_quality_model, score_case

__all__ = ["QualityModel", "accept", "check_compatible", "load_quality_model", "score_case"]
