"""Stage 5, pipeline: the whole method as commands (teacher, pseudo-labels, KD student, evaluation).

One library of steps (`nnunet_medaka.pipeline.steps`) on one engine (`nnunet_medaka.pipeline.engine`): ``run``
(the method on one dataset, resumable) is the graph of one unit, ``experiment`` (the paper's ablation over fractions
and seeds) the graph of every fraction x seed, ``demo`` is ``run`` on synthetic phantoms. The folders they write are
`nnunet_medaka.pipeline.layout`. Imports the shared top-level modules and every earlier stage.
"""
from nnunet_medaka.pipeline.experiment_command import run_experiment
from nnunet_medaka.pipeline.run import run_pipeline

__all__ = ["run_experiment", "run_pipeline"]
