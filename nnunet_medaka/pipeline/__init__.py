"""Stage 5, pipeline: the whole method as commands (teacher, pseudo-labels, KD student, evaluation).

``demo`` and the teacher-vs-student experiment chain the earlier stages through nnU-Net's stock commands.
Imports the shared top-level modules and every earlier stage.
"""
from nnunet_medaka.pipeline.experiment import Schedule, experiment_environ, run_teacher_student

__all__ = ["Schedule", "experiment_environ", "run_teacher_student"]
