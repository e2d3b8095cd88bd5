"""Micro-CT specimens (one image and one mask per organ each) to an nnU-Net raw dataset; see ``convert``."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from nnunet_medaka.conversion.jobs import (OrgansArg, downsample_factor, parse_spacing, resolve_organ_list, run_jobs,
                                           write_conversion_record)
from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)


class _MicroCTJob:
    """Picklable call of ``convert_specimen`` for the worker pool."""

    def __init__(self, settings, show_progress: bool):
        self.settings, self.show_progress = settings, show_progress

    def __call__(self, specimen):
        from nnunet_medaka.conversion.microct import convert_specimen

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
        Folder in the micro-CT layout (see ``nnunet_medaka.conversion.microct``): ``images/``, ``labels/`` or
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
        For every problem with the input (docs/how-to/convert-data.md); nothing is written then.
    """
    from nnunet_medaka.conversion.specimens import Settings, check_specimen, find_specimens
    from nnunet_medaka.conversion.raw_dataset import UNLABELED_GT, UNLABELED_IMAGES, staged_dataset, target_folder, write_dataset_json
    from nnunet_medaka.conversion.resample import IMAGE_METHODS, LABEL_METHODS

    source = Path(source).expanduser()
    organ_list = resolve_organ_list(organs, source)
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
        factor=downsample_factor(downsample),
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
        summaries = dict(run_jobs(job, specimens, workers=workers, progress=progress, desc="specimens"))
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
        write_conversion_record(staging, {
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
