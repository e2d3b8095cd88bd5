"""Stage 2, training: a raw dataset in, trained nnU-Net models out.

Everything nnU-Net's trainer lookup and ``nnUNetv2_train``/``predict``/``evaluate`` touch: ``SupervisedTrainer``
(the teacher), ``KDTrainer`` (the student, with the KD loss against a frozen teacher loaded from its result
folder), small CPU plans, ``export-plain``, and per-organ scores from nnU-Net's evaluator. Imports the shared
top-level modules and the conversion stage. The trainer classes are not imported here, so that importing this
package does not import nnU-Net's trainer (and torch) before it is needed.
"""
from nnunet_medaka.training.evaluation import comparison_table, per_label_scores, plot_comparison
from nnunet_medaka.training.plans import write_small_plans

__all__ = ["comparison_table", "per_label_scores", "plot_comparison", "write_small_plans"]
