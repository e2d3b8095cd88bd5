"""Pieces every converter shares: spacing and downsampling arguments, the organ list, parallel jobs with a
progress bar, and the ``conversion.json`` record."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence, Union

from nnunet_medaka.errors import MedakaError

if TYPE_CHECKING:
    from nnunet_medaka.conversion.organs import OrganList

__all__ = ["OrgansArg", "downsample_factor", "parse_spacing", "resolve_organ_list", "run_jobs",
           "write_conversion_record"]


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
    from nnunet_medaka.conversion.volume_io import unit_to_mm

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


def downsample_factor(downsample: Union[int, Sequence[int]]) -> tuple:
    """Downsampling factor given as one int or (x, y, z) -> (z, y, x)."""
    values = [downsample] if isinstance(downsample, int) else list(downsample)
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise MedakaError(f"downsample {downsample!r}: expected a whole number >= 1, or three of them (x, y, z)")
    return tuple(values[::-1])


def resolve_organ_list(organs: OrgansArg, source: Path, *, msd_json: Optional[dict] = None):
    from nnunet_medaka.conversion.organs import OrganList, find_organ_list, load_organ_list, organ_list_from_mapping, parse_label_assignments

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
    if not Path(source).is_dir():
        raise MedakaError(f"{source}: no such folder; give the folder of your specimens (images/, labels/ or masks/)")
    found = find_organ_list(source)
    if found is None:
        hint = "--labels NAME=VALUE,..." if msd_json is not None else "--organs FILE"
        raise MedakaError(f"{source}: no organ list (organs.json or organs.yaml) found; add one or pass {hint}")
    return load_organ_list(found)


def run_jobs(function: Callable, jobs: list, *, workers: int, progress: bool, desc: str) -> list:
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


def write_conversion_record(folder: Path, record: dict) -> None:
    from nnunet_medaka.files import write_json_atomic

    write_json_atomic(folder / "conversion.json", record)
