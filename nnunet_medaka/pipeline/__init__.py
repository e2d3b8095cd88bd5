"""Stage 5, pipeline: the whole method as commands (teacher, pseudo-labels, KD student, evaluation).

``run`` (the method, resumable), ``experiment`` (the paper's ablation over fractions and seeds) and ``demo`` chain
the earlier stages through nnU-Net's stock commands.
Imports the shared top-level modules and every earlier stage.
"""
from nnunet_medaka.pipeline.experiment import Schedule, experiment_environ, run_teacher_student
from nnunet_medaka.pipeline.experiment_command import run_experiment

__all__ = ["Schedule", "experiment_environ", "run_experiment", "run_teacher_student"]
