"""nnunet-medaka: knowledge-distillation teacher/student training for nnU-Net v2.

Implements Bhatt et al., "A Knowledge Distillation framework for Multi-Organ
Segmentation of Medaka Fish in Tomographic Image" (ISBI 2023) as an nnU-Net v2
plugin: trainers are found by nnU-Net through ``nnUNet_extTrainer``.
"""
from pathlib import Path

from nnunet_medaka.errors import MedakaError

__version__ = "0.1.0"
__all__ = ["MedakaError", "ext_trainer_dir", "__version__"]


def ext_trainer_dir() -> Path:
    """Folder of thin trainer modules to put on ``nnUNet_extTrainer``.

    An installed package carries it as ``nnunet_medaka/trainers``; a source
    checkout (or editable install) has it at the repository's top level.

    Returns
    -------
    pathlib.Path
        Absolute path of the folder.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "trainers", here.parent / "trainers"):
        if (candidate / "nnunet_medaka_trainers.py").is_file():
            return candidate
    raise MedakaError(
        f"the trainer folder is missing: looked in {here / 'trainers'} and {here.parent / 'trainers'}; "
        "reinstall with `pip install .` from the nnunet-medaka repository"
    )
