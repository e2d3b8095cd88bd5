"""Stage 1, conversion: user data in, nnU-Net raw datasets out.

Takes micro-CT volumes with one mask per organ (TIFF stacks, slice folders, NIfTI/NRRD/MHA), MSD tasks or
generated synthetic phantoms, and writes ``nnUNet_raw/DatasetXXX_Name`` (``imagesTr``/``labelsTr``,
``imagesUnlabeled``, ``imagesTs``) with its ``dataset.json``; ``split`` divides a dataset into labeled, unlabeled
and test cases. Imports only the shared top-level modules.
"""
from nnunet_medaka.conversion.convert import convert_microct, convert_msd, parse_spacing
from nnunet_medaka.conversion.phantom import make_phantoms
from nnunet_medaka.conversion.split import split_dataset

__all__ = ["convert_microct", "convert_msd", "make_phantoms", "parse_spacing", "split_dataset"]
