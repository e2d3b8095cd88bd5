"""MSD-style task folders (``imagesTr``/``labelsTr``/``imagesTs`` + ``dataset.json``) to an nnU-Net raw dataset;
see ``convert``."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from nnunet_medaka.conversion.jobs import OrgansArg, resolve_organ_list, run_jobs, write_conversion_record
from nnunet_medaka.errors import MedakaError

log = logging.getLogger(__name__)


class _MSDJob:
    """Picklable call of ``convert_msd_case`` for the worker pool."""

    def __init__(self, organs, n_channels: int):
        self.organs, self.n_channels = organs, n_channels

    def __call__(self, case):
        from nnunet_medaka.conversion.msd import convert_msd_case

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
    from nnunet_medaka.conversion.msd import find_msd_cases, read_msd_json
    from nnunet_medaka.conversion.raw_dataset import staged_dataset, target_folder, write_dataset_json

    source = Path(source).expanduser()
    msd_json = read_msd_json(source)
    organ_list = resolve_organ_list(labels, source, msd_json=msd_json or {})
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
        summaries = dict(run_jobs(job, training + test, workers=workers, progress=progress, desc="cases"))
        write_dataset_json(
            staging,
            channel_names=dict(enumerate(channels)),
            labels=organ_list.nnunet_labels(),
            num_training=len(training),
            name=dataset_name,
            description=f"converted by nnunet-medaka from the MSD-style folder {source.resolve()}",
            numTest=len(test),
        )
        write_conversion_record(staging, {
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
