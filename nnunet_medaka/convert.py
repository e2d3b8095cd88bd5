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
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence, Union

from nnunet_medaka.errors import MedakaError

if TYPE_CHECKING:
    from nnunet_medaka.organs import OrganList

log = logging.getLogger(__name__)

__all__ = ["convert_microct", "convert_msd", "parse_spacing"]

OrgansArg = Union[None, str, os.PathLike, Mapping, "OrganList"]


def parse_spacing(value: Union[str, float, Sequence[float]]) -> tuple:
    """Voxel spacing ``(x, y, z)`` in mm from a number, 3 numbers, or text with a unit.

    Examples
    --------
    >>> parse_spacing("2.5um")
    (0.0025, 0.0025, 0.0025)
    >>> parse_spacing("2,2,5 um")
    (0.002, 0.002, 0.005)
    >>> parse_spacing(0.5)
    (0.5, 0.5, 0.5)
    """
    from nnunet_medaka.volume_io import unit_to_mm

    if isinstance(value, str):
        text = value.strip()
        m = re.fullmatch(r"([0-9eE.+\-,\s]+?)\s*([A-Za-zµμ]+)?", text)
        scale = unit_to_mm(m.group(2)) if m and m.group(2) else 1.0
        try:
            numbers = [float(v) for v in re.split(r"[,\s]+", m.group(1).strip())] if m else []
        except ValueError:
            numbers = []
        if not m or scale is None or len(numbers) not in (1, 3):
            raise MedakaError(
                f"--spacing {value!r}: expected X,Y,Z or one number for all axes, in mm or with a unit "
                "(um, mm, nm), e.g. --spacing 2.5um or --spacing 2,2,5um"
            )
        values = [v * scale for v in numbers]
    else:
        values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(v > 0 and v == v and v != float("inf") for v in values):
        raise MedakaError(f"spacing {value!r}: expected three positive numbers (x, y, z)")
    return tuple(values)


def _factor(downsample: Union[int, Sequence[int]]) -> tuple:
    """Downsampling factor given as one int or (x, y, z) -> (z, y, x)."""
    values = [downsample] if isinstance(downsample, int) else list(downsample)
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise MedakaError(f"downsample {downsample!r}: expected a whole number >= 1, or three of them (x, y, z)")
    return tuple(values[::-1])


def _organ_list(organs: OrgansArg, source: Path, *, msd_json: Optional[dict] = None):
    from nnunet_medaka.organs import OrganList, find_organ_list, load_organ_list, organ_list_from_mapping, parse_label_assignments

    if isinstance(organs, OrganList):
        return organs
    if isinstance(organs, Mapping):
        return organ_list_from_mapping(organs, source="organs argument")
    if isinstance(organs, str) and "=" in organs:
        return parse_label_assignments(organs)
    if organs is not None:
        return load_organ_list(organs)
    if msd_json is not None and isinstance(msd_json.get("labels"), Mapping):
        try:  # MSD: {"0": "background", "1": "Anterior"}
            mapping = {str(name): int(value) for value, name in msd_json["labels"].items() if int(value) != 0}
        except (TypeError, ValueError):
            raise MedakaError(f"{source / 'dataset.json'}: 'labels' is not a map of value -> name; pass --labels") from None
        return organ_list_from_mapping(mapping, source=str(source / "dataset.json"))
    found = find_organ_list(source)
    if found is None:
        hint = "--labels NAME=VALUE,..." if msd_json is not None else "--organs FILE"
        raise MedakaError(f"{source}: no organ list (organs.json or organs.yaml) found; add one or pass {hint}")
    return load_organ_list(found)


def _run_jobs(function: Callable, jobs: list, *, workers: int, progress: bool, desc: str) -> list:
    """Run ``function(job)`` for all jobs, in worker processes if ``workers > 1``; first error wins."""
    from tqdm import tqdm

    if workers < 1:
        raise MedakaError(f"workers={workers}: expected 1 or more")
    if workers == 1 or len(jobs) <= 1:
        return [function(job) for job in tqdm(jobs, desc=desc, unit="case", disable=not progress)]
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    # spawn, not fork: the caller may hold threads (torch, tqdm) that fork would copy half-way
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(function, job) for job in jobs]
        with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress) as bar:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                bar.update(len(done))
                failed = next((f for f in done if f.exception() is not None), None)
                if failed is not None:
                    for f in pending:
                        f.cancel()
                    raise failed.exception()
        return [f.result() for f in futures]


class _MicroCTJob:
    """Picklable call of ``convert_specimen`` for the worker pool."""

    def __init__(self, settings, show_progress: bool):
        self.settings, self.show_progress = settings, show_progress

    def __call__(self, specimen):
        from nnunet_medaka.microct import convert_specimen

        return specimen.case_id, convert_specimen(specimen, self.settings, show_progress=self.show_progress)


def convert_microct(
    source: os.PathLike | str,
    *,
    dataset_id: int,
    dataset_name: str,
    organs: OrgansArg = None,
    spacing: Union[None, str, float, Sequence[float]] = None,
    downsample: Union[int, Sequence[int]] = 1,
    image_interpolation: str = "area",
    label_interpolation: str = "majority",
    clip: Optional[Sequence[float]] = None,
    crop: bool = False,
    crop_margin: int = 4,
    crop_threshold: Optional[float] = None,
    priority: Optional[Sequence[str]] = None,
    allow_missing_masks: bool = False,
    channel_name: str = "CT",
    out_dir: Optional[os.PathLike | str] = None,
    overwrite: bool = False,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Convert a folder of micro-CT specimens into an nnU-Net raw dataset.

    Parameters
    ----------
    source : path
        Folder in the micro-CT layout (see ``nnunet_medaka.microct``): ``images/``, ``labels/`` or
        ``masks/``, optional ``unlabeled/`` and ``unlabeled_gt/``.
    dataset_id, dataset_name : int, str
        nnU-Net dataset number (1-999) and name; the folder is ``DatasetXXX_Name``.
    organs : path, mapping, OrganList or "name=value,..." string, optional
        Organ list; default ``SOURCE/organs.json`` or ``SOURCE/organs.yaml``.
    spacing : str, float or (x, y, z), optional
        Voxel spacing in mm (or text with a unit, ``"2.5um"``); overrides file metadata. Required
        when the files carry none.
    downsample : int or (x, y, z) ints
        Integer downsampling factor (the Medaka atlas halves each axis: 2).
    image_interpolation : {"area", "linear"}
    label_interpolation : {"majority", "nearest"}
    clip : (low, high), optional
        Clip image intensities before downsampling.
    crop : bool
        Crop each specimen to its bounding box (threshold on a block-averaged copy, largest
        component, plus ``crop_margin`` voxels); labels are never cut.
    crop_margin : int
        Margin in input voxels.
    crop_threshold : float, optional
        Intensity separating specimen from background; default Otsu's threshold.
    priority : sequence of organ names, optional
        Where per-organ masks overlap, earlier organs win (unlisted organs follow in organ-list
        order). Default: overlapping masks are an error.
    allow_missing_masks : bool
        Accept specimens whose masks folder lacks some organs (they are background there).
    channel_name : str
        nnU-Net channel name, which picks its normalisation (``CT`` by default, see module docs).
    out_dir : path, optional
        Folder that receives ``DatasetXXX_Name``; default ``$nnUNet_raw``.
    overwrite : bool
        Replace an existing dataset of the same name.
    workers : int
        Specimens converted in parallel (each holds about one output volume in memory).
    progress : bool
        Show progress bars.

    Returns
    -------
    pathlib.Path
        The dataset folder.

    Raises
    ------
    MedakaError
        For every problem with the input (see the issue list in the README); nothing is written then.
    """
    from nnunet_medaka.microct import Settings, check_specimen, find_specimens
    from nnunet_medaka.raw_dataset import UNLABELED_GT, UNLABELED_IMAGES, staged_dataset, target_folder, write_dataset_json
    from nnunet_medaka.resample import IMAGE_METHODS, LABEL_METHODS

    source = Path(source).expanduser()
    organ_list = _organ_list(organs, source)
    if image_interpolation not in IMAGE_METHODS:
        raise MedakaError(f"image_interpolation {image_interpolation!r}: expected one of {', '.join(IMAGE_METHODS)}")
    if label_interpolation not in LABEL_METHODS:
        raise MedakaError(f"label_interpolation {label_interpolation!r}: expected one of {', '.join(LABEL_METHODS)}")
    if clip is not None:
        clip = tuple(float(c) for c in clip)
        if len(clip) != 2 or not clip[0] < clip[1]:
            raise MedakaError(f"clip {clip!r}: expected LOW,HIGH with LOW < HIGH")
    if priority is not None:
        priority = tuple(priority)
        unknown = [n for n in priority if n not in organ_list.names]
        if unknown or len(set(priority)) != len(priority):
            raise MedakaError(
                f"priority {list(priority)}: unknown or repeated organs {unknown}; use organ names from "
                f"{organ_list.source}: {', '.join(organ_list.names)}"
            )
    if isinstance(crop_margin, bool) or not isinstance(crop_margin, int) or crop_margin < 0:
        raise MedakaError(f"crop_margin {crop_margin!r}: expected a whole number >= 0")
    settings = Settings(
        organs=organ_list,
        spacing=None if spacing is None else parse_spacing(spacing),
        factor=_factor(downsample),
        image_method=image_interpolation,
        label_method=label_interpolation,
        clip=clip,
        crop=crop,
        crop_margin=crop_margin,
        crop_threshold=crop_threshold,
        priority=priority,
        allow_missing_masks=allow_missing_masks,
    )
    target = target_folder(dataset_id, dataset_name, out_dir)
    if target.exists() and not overwrite:
        raise MedakaError(f"{target}: already exists; pass --overwrite to replace it, or choose another id/name")
    labeled, unlabeled = find_specimens(source, settings)
    problems = [p for s in labeled + unlabeled for p in check_specimen(s, settings)]
    if problems:
        raise MedakaError("; ".join(problems))

    with staged_dataset(target, overwrite=overwrite) as staging:
        for sub in ("imagesTr", "labelsTr", UNLABELED_IMAGES):
            (staging / sub).mkdir()
        if any(s.labels is not None for s in unlabeled):
            (staging / UNLABELED_GT).mkdir()
        for s in labeled:
            s.out_image = staging / "imagesTr" / f"{s.case_id}_0000.nii.gz"
            s.out_label = staging / "labelsTr" / f"{s.case_id}.nii.gz"
        for s in unlabeled:
            s.out_image = staging / UNLABELED_IMAGES / f"{s.case_id}_0000.nii.gz"
            s.out_label = staging / UNLABELED_GT / f"{s.case_id}.nii.gz" if s.labels is not None else None
        specimens = labeled + unlabeled
        job = _MicroCTJob(settings, show_progress=progress and workers == 1)
        summaries = dict(_run_jobs(job, specimens, workers=workers, progress=progress, desc="specimens"))
        extra: dict = {"unlabeled_images": UNLABELED_IMAGES, "numUnlabeled": len(unlabeled)}
        if any(s.labels is not None for s in unlabeled):
            extra["unlabeled_ground_truth"] = UNLABELED_GT
        write_dataset_json(
            staging,
            channel_names={0: channel_name},
            labels=organ_list.nnunet_labels(),
            num_training=len(labeled),
            name=dataset_name,
            description=f"micro-CT specimens converted by nnunet-medaka from {source.resolve()}",
            **extra,
        )
        _write_conversion_record(staging, {
            "converter": "microct",
            "source": str(source.resolve()),
            "organ_list": organ_list.source,
            "organ_source_values": organ_list.source_values(),
            "spacing_unit": "mm",
            "spacing_override": settings.spacing,
            "downsample_xyz": list(settings.factor[::-1]),
            "image_interpolation": image_interpolation,
            "label_interpolation": label_interpolation,
            "clip": clip,
            "crop": crop,
            "crop_margin": crop_margin,
            "priority": priority,
            "labeled": [s.case_id for s in labeled],
            "unlabeled": [s.case_id for s in unlabeled],
            "cases": summaries,
        })
    log.info("wrote %s: %d labeled, %d unlabeled specimens", target, len(labeled), len(unlabeled))
    return target


def _write_conversion_record(folder: Path, record: dict) -> None:
    from nnunet_medaka.config import write_json_atomic

    write_json_atomic(folder / "conversion.json", record)


class _MSDJob:
    """Picklable call of ``convert_msd_case`` for the worker pool."""

    def __init__(self, organs, n_channels: int):
        self.organs, self.n_channels = organs, n_channels

    def __call__(self, case):
        from nnunet_medaka.msd import convert_msd_case

        return case.case_id, convert_msd_case(case, self.organs, n_channels=self.n_channels)


def convert_msd(
    source: os.PathLike | str,
    *,
    dataset_id: int,
    dataset_name: str,
    labels: OrgansArg = None,
    channel_names: Union[None, str, Sequence[str], Mapping] = None,
    out_dir: Optional[os.PathLike | str] = None,
    overwrite: bool = False,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Convert a Medical Segmentation Decathlon style folder into an nnU-Net raw dataset.

    Parameters
    ----------
    source : path
        Folder with ``imagesTr/CASE.nii.gz`` and ``labelsTr/CASE.nii.gz`` (no channel suffix; 4D
        images are split into channels), optional ``imagesTs/`` and MSD ``dataset.json``.
    dataset_id, dataset_name : int, str
        nnU-Net dataset number (1-999) and name.
    labels : "name=value,..." string, mapping, organ list path or OrganList, optional
        Label names and values; default the MSD ``dataset.json`` labels.
    channel_names : str, sequence or {index: name}, optional
        nnU-Net channel names (``"MRI"`` gives z-score normalisation, ``"CT"`` CT normalisation);
        default the MSD ``dataset.json`` modality.
    out_dir : path, optional
        Folder that receives ``DatasetXXX_Name``; default ``$nnUNet_raw``.
    overwrite : bool
        Replace an existing dataset of the same name.
    workers : int
        Cases converted in parallel.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The dataset folder.

    Raises
    ------
    MedakaError
        On a bad layout (no cases, missing or stray labels, duplicate ids), unreadable files,
        geometry mismatches, NaN/inf images, non-integer or unknown label values, empty labels, or an
        existing dataset; nothing is written then.
    """
    from nnunet_medaka.msd import find_msd_cases, read_msd_json
    from nnunet_medaka.raw_dataset import staged_dataset, target_folder, write_dataset_json

    source = Path(source).expanduser()
    msd_json = read_msd_json(source)
    organ_list = _organ_list(labels, source, msd_json=msd_json or {})
    channels = _channel_names(channel_names, msd_json, source)
    target = target_folder(dataset_id, dataset_name, out_dir)
    if target.exists() and not overwrite:
        raise MedakaError(f"{target}: already exists; pass --overwrite to replace it, or choose another id/name")
    training, test = find_msd_cases(source)

    with staged_dataset(target, overwrite=overwrite) as staging:
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if test else ()):
            (staging / sub).mkdir()
        for case in training:
            case.out_images = staging / "imagesTr"
            case.out_label = staging / "labelsTr" / f"{case.case_id}.nii.gz"
        for case in test:
            case.out_images = staging / "imagesTs"
        job = _MSDJob(organ_list, n_channels=len(channels))
        summaries = dict(_run_jobs(job, training + test, workers=workers, progress=progress, desc="cases"))
        write_dataset_json(
            staging,
            channel_names=dict(enumerate(channels)),
            labels=organ_list.nnunet_labels(),
            num_training=len(training),
            name=dataset_name,
            description=f"converted by nnunet-medaka from the MSD-style folder {source.resolve()}",
            numTest=len(test),
        )
        _write_conversion_record(staging, {
            "converter": "msd",
            "source": str(source.resolve()),
            "label_source_values": organ_list.source_values(),
            "training": [c.case_id for c in training],
            "test": [c.case_id for c in test],
            "cases": summaries,
        })
    log.info("wrote %s: %d training, %d test cases", target, len(training), len(test))
    return target


def _channel_names(channel_names, msd_json: Optional[dict], source: Path) -> list:
    if channel_names is None and msd_json and isinstance(msd_json.get("modality"), Mapping):
        channel_names = {int(k): v for k, v in msd_json["modality"].items()}
    if channel_names is None:
        raise MedakaError(
            f"{source}: no MSD dataset.json with a 'modality' entry; pass --channel-name (e.g. MRI for z-score "
            "normalisation, CT for CT normalisation)"
        )
    if isinstance(channel_names, str):
        channel_names = [channel_names]
    if isinstance(channel_names, Mapping):
        channel_names = [channel_names[k] for k in sorted(channel_names, key=int)]
    names = [str(n).strip() for n in channel_names]
    if not names or not all(names):
        raise MedakaError(f"channel names {channel_names!r}: expected one non-empty name per image channel")
    return names


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
