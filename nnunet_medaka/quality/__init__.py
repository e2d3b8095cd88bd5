"""Stage 3, quality: the teacher's cross-validation outputs in, a quality classifier out.

Learns, from the teacher's out-of-fold predictions of the labeled cases, to predict each pseudo-label's IoU per
organ from signals available on an unlabeled scan; scores new predictions. Imports the shared top-level
modules and the conversion and training stages.
"""

__all__: list = []
