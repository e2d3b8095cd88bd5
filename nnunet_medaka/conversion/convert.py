"""``nnunet-medaka convert``: write nnU-Net raw datasets from micro-CT specimens or MSD-style folders.

Output (``$nnUNet_raw/DatasetXXX_Name/`` or ``out_dir/DatasetXXX_Name/``)::

    dataset.json              channel_names, labels (organ names), numTraining, file_ending, plus
                              "unlabeled_images": "imagesUnlabeled", "numUnlabeled"
                              (and "unlabeled_ground_truth" when ground truth was given)
    imagesTr/CASE_0000.nii.gz labeled images (one channel)
    labelsTr/CASE.nii.gz      labels 0..N, uint8
    imagesUnlabeled/CASE_0000.nii.gz   images for pseudo-labelling (declared in dataset.json;
                              nnU-Net ignores the folder and the keys)
    labelsUnlabeled_gt/CASE.nii.gz     their ground truth, for evaluation only (if any)
    imagesTs/CASE_0000.nii.gz MSD test images (MSD only)
    conversion.json           settings and, per case, source files, crop box, shapes, spacing

Everything is written as NIfTI with the voxel spacing in mm, which nnU-Net reads with SimpleITK.
Micro-CT channels are named ``CT`` by default: micro-CT grey values are attenuation on a
scanner-fixed scale, so nnU-Net's CT scheme (clip to foreground percentiles, global mean/std) fits
better than a per-image z-score. The dataset is built in a hidden staging folder and renamed into
place at the end: a failed conversion leaves nothing behind.
"""
from __future__ import annotations

import argparse
import logging

from nnunet_medaka.conversion.jobs import parse_spacing
from nnunet_medaka.conversion.microct_dataset import convert_microct
from nnunet_medaka.conversion.msd_dataset import convert_msd

log = logging.getLogger(__name__)

__all__ = ["convert_microct", "convert_msd", "parse_spacing"]


def _comma_floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers, e.g. 0,5000") from None


def _comma_ints(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or X,Y,Z whole numbers") from None
    return values[0] if len(values) == 1 else values


def _common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset-id", type=int, required=True, metavar="ID", help="nnU-Net dataset number (1-999)")
    p.add_argument("-n", "--name", required=True, help="dataset name: the folder becomes DatasetXXX_NAME")
    p.add_argument("--out-dir", metavar="DIR", help="folder that receives DatasetXXX_NAME (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="cases converted in parallel (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_microct(args: argparse.Namespace) -> int:
    path = convert_microct(
        args.source,
        dataset_id=args.dataset_id,
        dataset_name=args.name,
        organs=args.organs,
        spacing=args.spacing,
        downsample=args.downsample,
        image_interpolation=args.image_interpolation,
        label_interpolation=args.label_interpolation,
        clip=args.clip,
        crop=args.crop,
        crop_margin=args.crop_margin,
        crop_threshold=args.crop_threshold,
        priority=args.priority.split(",") if args.priority else None,
        allow_missing_masks=args.allow_missing_masks,
        channel_name=args.channel_name,
        out_dir=args.out_dir,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(path)
    return 0


def _run_msd(args: argparse.Namespace) -> int:
    path = convert_msd(
        args.source,
        dataset_id=args.dataset_id,
        dataset_name=args.name,
        labels=args.labels or args.organs,
        channel_names=args.channel_name.split(",") if args.channel_name else None,
        out_dir=args.out_dir,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="write an nnU-Net raw dataset from micro-CT specimens or an MSD-style folder",
        description="Write an nnU-Net raw dataset (NIfTI, dataset.json, imagesUnlabeled/ for pseudo-labels). "
        "Nothing is left behind when a conversion fails.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    m = formats.add_parser(
        "microct",
        help="micro-CT specimens: TIFF stacks/slices or NIfTI/NRRD/MHA, with label volumes or per-organ masks",
        description="SOURCE holds images/CASE, labels/CASE (multi-label) or masks/CASE/ (one mask per organ), "
        "optional unlabeled/CASE and unlabeled_gt/CASE, and organs.json/organs.yaml. CASE is a TIFF stack, a "
        "folder of TIFF slices, or a .nii.gz/.nrrd/.mha file.",
    )
    m.add_argument("source", metavar="SOURCE", help="folder in the micro-CT layout")
    _common_arguments(m)
    m.add_argument("--organs", metavar="FILE", help="organ list (JSON/YAML; default SOURCE/organs.json or .yaml)")
    m.add_argument("--spacing", metavar="X,Y,Z", help="voxel spacing, mm unless a unit is given: 0.0025, 2.5um, 2,2,5um")
    m.add_argument("--downsample", type=_comma_ints, default=1, metavar="F", help="integer factor, or X,Y,Z factors (default 1)")
    m.add_argument("--image-interpolation", choices=("area", "linear"), default="area",
                   help="image downsampling: block mean or trilinear at the block centre (default area)")
    m.add_argument("--label-interpolation", choices=("majority", "nearest"), default="majority",
                   help="label downsampling: most frequent label or centre voxel (default majority)")
    m.add_argument("--clip", type=_comma_floats, metavar="LOW,HIGH", help="clip image intensities")
    m.add_argument("--crop", action="store_true", help="crop each specimen to its bounding box (labels are never cut)")
    m.add_argument("--crop-margin", type=int, default=4, metavar="N", help="crop margin in input voxels (default 4)")
    m.add_argument("--crop-threshold", type=float, metavar="T", help="specimen/background intensity (default: Otsu)")
    m.add_argument("--priority", metavar="ORGAN,...", help="resolve overlapping masks: earlier organs win (default: error)")
    m.add_argument("--allow-missing-masks", action="store_true", help="organs without a mask file are background")
    m.add_argument("--channel-name", default="CT", help="nnU-Net channel name, picks the normalisation (default CT)")
    m.set_defaults(func=_run_microct)

    s = formats.add_parser(
        "msd",
        help="Medical Segmentation Decathlon folder: imagesTr/X.nii.gz + labelsTr/X.nii.gz",
        description="SOURCE holds imagesTr/CASE.nii.gz and labelsTr/CASE.nii.gz (no channel suffix), optional "
        "imagesTs/ and an MSD dataset.json (its labels and modality are used unless given here).",
    )
    s.add_argument("source", metavar="SOURCE", help="MSD-style folder")
    _common_arguments(s)
    s.add_argument("--labels", metavar="NAME=V,...", help="label names and values, e.g. anterior=1,posterior=2")
    s.add_argument("--organs", metavar="FILE", help="label names and values as an organ list file instead")
    s.add_argument("--channel-name", metavar="NAME[,NAME]", help="channel name(s), e.g. MRI or CT (default: MSD dataset.json)")
    s.set_defaults(func=_run_msd)
