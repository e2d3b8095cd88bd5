"""The pseudo-label output folder: settings, per-case records, the table and the summary, and merging shards.

Layout of ``OUTPUT/``::

    pseudolabel_settings.json   teacher, folds, input, acceptance settings, the full sorted case list
    labels/CASE<ending>         the training label map: teacher argmax (+ ignore label for rejected organs)
    records/CASE.json           per-case result; written last, so a case is finished exactly when it exists
    failures/CASE.json          a case whose files could not be read (retried on the next run)
    runs/part-I-of-N.json       timing of the latest run of each part (cases/s, peak memory)
    pseudolabels.csv            one row per case and organ (written by a complete run or by ``merge``)
    pseudolabel_summary.json    counts and mean true IoU of accepted vs rejected pseudo-labels
    failed_cases.csv            only when some case failed

The table and the summary are computed from the records only (sorted by case, organs in label order, floats in
fixed notation), so sharded runs merged give byte-identical files to one run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional, Sequence

from nnunet_medaka.files import claim_folder, read_json, write_json_atomic
from nnunet_medaka.errors import MedakaError

__all__ = ["FAILED_FILE", "pseudolabel_view", "quality_on_unlabeled", "SETTINGS_FILE", "SUMMARY_FILE", "TABLE_COLUMNS", "TABLE_FILE", "finished_cases",
           "format_table", "merge_pseudolabels", "prepare_output", "read_records", "read_settings",
           "remove_stale_temporaries", "summarize", "write_record", "write_results"]

SETTINGS_FILE = "pseudolabel_settings.json"
TABLE_FILE = "pseudolabels.csv"
SUMMARY_FILE = "pseudolabel_summary.json"
FAILED_FILE = "failed_cases.csv"
# the label-free signals (`nnunet_medaka.pseudolabel.signals`) after the quality model's scores; records written
# before they existed leave their cells empty
TABLE_COLUMNS = ("case", "organ", "label", "voxels", "predicted_iou", "p_good", "fold_agreement",
                 "soft_dice_confidence", "mean_max_softmax", "decision", "case_decision", "true_iou")
_NUMBERS = ("predicted_iou", "p_good", "fold_agreement", "soft_dice_confidence", "mean_max_softmax")


def read_settings(output: Path) -> dict:
    path = Path(output) / SETTINGS_FILE
    if not path.is_file():
        raise MedakaError(f"{output}: no {SETTINGS_FILE}; not a pseudolabel output folder (run `nnunet-medaka pseudolabel`)")
    return read_json(path, what="the pseudo-label settings", fix="run the pseudolabel command again with --overwrite")


def prepare_output(output: Path, settings: dict, overwrite: bool) -> None:
    """Create the output folder, or check that an existing one belongs to the same run (resume / other shard)."""
    if output.exists() and not output.is_dir():
        raise MedakaError(f"output {output}: exists and is not a folder")
    claim_folder(output, (SETTINGS_FILE,), what="a pseudolabel output folder", option="output folder (-o)",
                 overwrite=overwrite)
    path = output / SETTINGS_FILE
    if path.is_file() and not overwrite:
        old = read_json(path, what="the pseudo-labels' settings", fix="use another output folder or --overwrite")
        differ = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        if differ:
            raise MedakaError(f"output {output}: holds pseudo-labels made with other settings (differs in: "
                              f"{', '.join(differ)}); use another output folder, the same arguments to resume, or "
                              "--overwrite to start again")
    if overwrite and output.is_dir():
        for name in ("labels", "records", "failures", "runs"):
            shutil.rmtree(output / name, ignore_errors=True)
        for name in (TABLE_FILE, SUMMARY_FILE, FAILED_FILE, SETTINGS_FILE):
            (output / name).unlink(missing_ok=True)
    for name in ("labels", "records", "failures", "runs"):
        (output / name).mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        write_json_atomic(path, settings)


def remove_stale_temporaries(output: Path, cases: Sequence[str]) -> None:
    """Temporary files a killed run of these cases left behind (never another shard's)."""
    for case in cases:
        for folder in ("labels", "records", "failures"):
            for tmp in (output / folder).glob(f".{case}.*tmp*"):
                tmp.unlink(missing_ok=True)


def write_record(output: Path, record: dict) -> None:
    """Write a finished case's record atomically (after its label file is in place)."""
    write_json_atomic(Path(output) / "records" / f"{record['case']}.json", record)
    failure = Path(output) / "failures" / f"{record['case']}.json"
    if failure.exists():
        failure.unlink()


def _load_record(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished_cases(output: Path, cases: Iterable[str]) -> set:
    """Cases whose record exists and whose label file is present."""
    done = set()
    for case in cases:
        record = _load_record(Path(output) / "records" / f"{case}.json")
        if record is not None and (Path(output) / record["label_file"]).is_file():
            done.add(case)
    return done


def read_records(output: Path, cases: Iterable[str]) -> tuple[dict, dict]:
    """(records, failures) of the given cases, each case -> dict; cases with neither are absent."""
    records, failures = {}, {}
    for case in cases:
        record = _load_record(Path(output) / "records" / f"{case}.json")
        if record is not None:
            records[case] = record
            continue
        failure = _load_record(Path(output) / "failures" / f"{case}.json")
        if failure is not None:
            failures[case] = failure
    return records, failures


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def format_table(records: dict) -> str:
    """``pseudolabels.csv`` text: one row per case (sorted) and organ (label order)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for case in sorted(records):
        record = records[case]
        for organ in sorted(record["organs"], key=lambda o: o["label"]):
            writer.writerow([case, organ["organ"], organ["label"], organ["voxels"],
                             *(_fmt(None if organ.get(k) is None else float(organ[k])) for k in _NUMBERS),
                             organ["decision"], record["case_decision"],
                             _fmt(None if organ.get("true_iou") is None else float(organ["true_iou"]))])
    return buffer.getvalue()


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return round(sum(values) / len(values), 6) if values else None


def summarize(settings: dict, records: dict, failures: dict) -> dict:
    """Counts of accepted/partial/rejected cases and organs, and the true IoU of accepted vs rejected ones."""
    decisions = [r["case_decision"] for r in records.values()]
    organs = [o for r in records.values() for o in r["organs"]]
    with_truth = [o for o in organs if o.get("true_iou") is not None]
    used = [c for c, r in records.items() if r["case_decision"] != "reject"]
    summary = {
        "cases": len(settings["cases"]),
        "finished": len(records),
        "failed": sorted(failures),
        "acceptance": settings["acceptance"],
        **({"filter": settings["filter"]} if "filter" in settings else {}),  # absent: the quality model's P(good)
        **({"filter_reason": settings["filter_reason"]} if "filter_reason" in settings else {}),  # --filter auto
        "threshold": settings["threshold"],
        "cases_accepted": decisions.count("accept"),
        "cases_partial": decisions.count("partial"),
        "cases_rejected": decisions.count("reject"),
        "cases_for_student": sorted(used),
        "organs_accepted": sum(o["decision"] == "accept" for o in organs),
        "organs_rejected": sum(o["decision"] == "reject" for o in organs),
        **({"voxel_confidence": settings["voxel_confidence"]} if "voxel_confidence" in settings else {}),
        "per_organ": {},
    }
    totals = [r["voxels_total"] for c, r in records.items() if c in used and "voxels_total" in r]
    if totals:  # the share of the student's pseudo-labeled voxels set to the ignore label (organ and voxel gating)
        summary["ignored_voxel_share"] = round(sum(records[c].get("ignored_voxels", 0) for c in used
                                                   if "voxels_total" in records[c]) / sum(totals), 6)
    if with_truth:
        summary["true_iou"] = {
            "accepted_organs_mean": _mean([o["true_iou"] for o in with_truth if o["decision"] == "accept"]),
            "rejected_organs_mean": _mean([o["true_iou"] for o in with_truth if o["decision"] == "reject"]),
            "all_organs_mean": _mean([o["true_iou"] for o in with_truth]),
            "student_cases_mean": _mean([o["true_iou"] for c in used for o in records[c]["organs"]
                                         if o.get("true_iou") is not None]),
        }
    names = sorted({(o["label"], o["organ"]) for o in organs})
    for label, name in names:
        mine = [o for o in organs if o["organ"] == name]
        entry = {"accepted": sum(o["decision"] == "accept" for o in mine),
                 "rejected": sum(o["decision"] == "reject" for o in mine)}
        if any(o.get("true_iou") is not None for o in mine):
            entry["true_iou_accepted_mean"] = _mean([o["true_iou"] for o in mine if o["decision"] == "accept"
                                                     and o.get("true_iou") is not None])
            entry["true_iou_rejected_mean"] = _mean([o["true_iou"] for o in mine if o["decision"] == "reject"
                                                     and o.get("true_iou") is not None])
        summary["per_organ"][name] = entry
    return summary


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(output: Path) -> dict:
    """Write the table, summary and failure list of a complete output folder from its records.

    Raises
    ------
    MedakaError
        If some case has neither a record nor a failure (a part has not run or was interrupted).
    """
    output = Path(output)
    settings = read_settings(output)
    records, failures = read_records(output, settings["cases"])
    missing = [c for c in settings["cases"] if c not in records and c not in failures]
    if missing:
        raise MedakaError(f"{output}: {len(missing)} of {len(settings['cases'])} cases are not finished "
                          f"(e.g. {missing[:3]}); run the missing parts (`nnunet-medaka pseudolabel` with the same "
                          "arguments and each --part-id), then merge again")
    _write_text_atomic(output / TABLE_FILE, format_table(records))
    summary = summarize(settings, records, failures)
    write_json_atomic(output / SUMMARY_FILE, summary)
    failed = output / FAILED_FILE
    if failures:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("case", "files", "error"))
        for case in sorted(failures):
            writer.writerow((case, " ".join(failures[case]["files"]), failures[case]["error"]))
        _write_text_atomic(failed, buffer.getvalue())
    elif failed.exists():
        failed.unlink()
    return summary


def _same_run(a: dict, b: dict) -> list:
    """Keys in which two parts' settings differ; folder paths may differ between machines."""
    def comparable(s: dict) -> dict:
        s = {k: v for k, v in s.items() if k not in ("images", "ground_truth", "quality_model")}
        s["teacher"] = {k: v for k, v in s.get("teacher", {}).items() if k != "folder"}
        return s

    a, b = comparable(a), comparable(b)
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def merge_pseudolabels(output: os.PathLike | str, sources: Iterable[os.PathLike | str] = ()) -> dict:
    """Combine the parts of a sharded run and write the table and summary.

    Parameters
    ----------
    output : path
        The output folder. When every part wrote into it (a shared file system), no ``sources`` are needed.
    sources : paths, optional
        Output folders of parts that ran elsewhere; their label files and records are copied into ``output``
        (created if needed, with the parts' settings).

    Returns
    -------
    dict
        The summary.

    Raises
    ------
    MedakaError
        If the parts were run with different settings, or some case is not finished in any of them.
    """
    output = Path(output).expanduser()
    sources = [Path(s).expanduser() for s in sources]
    reference = None
    if (output / SETTINGS_FILE).is_file():
        reference = read_settings(output)
    for source in sources:
        settings = read_settings(source)
        if reference is None:
            output.mkdir(parents=True, exist_ok=True)
            write_json_atomic(output / SETTINGS_FILE, settings)
            reference = settings
        differ = _same_run(reference, settings)
        if differ:
            raise MedakaError(f"{source}: made with other settings than {output} (keys {', '.join(differ)}); "
                              "merge only parts of one run")
    if reference is None:
        raise MedakaError(f"{output}: no {SETTINGS_FILE}; give the parts' output folders")
    for sub in ("labels", "records", "failures"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    for source in sources:
        if source.resolve() == output.resolve():
            continue
        records, failures = read_records(source, reference["cases"])
        for case, record in records.items():
            label = source / record["label_file"]
            if not label.is_file():
                continue
            target = output / record["label_file"]
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            shutil.copyfile(label, tmp)
            os.replace(tmp, target)
            write_record(output, record)
        for case, failure in failures.items():
            if not (output / "records" / f"{case}.json").is_file():
                write_json_atomic(output / "failures" / f"{case}.json", failure)
    return write_results(output)


def quality_on_unlabeled(pseudolabels: os.PathLike | str, *, tau: float) -> dict:
    """The quality classifier on the unlabeled cases whose ground truth was given, and the accepted counts.

    Returns
    -------
    dict
        ``n`` (organ predictions with ground truth), ``auroc`` (detecting IoU < tau from P(good)), ``spearman``
        (predicted vs true IoU), ``cases``, ``cases_for_student``, ``organs_accepted``, ``organs_rejected``, the
        mean true IoU of the accepted and of the rejected organs (``iou_accepted``, ``iou_rejected``; None if
        undefined), ``filter`` (what decided; ``filter_reason`` when ``filter=auto`` chose it) and ``signals``:
        every score judged by the true IoU (`pseudolabel.signals.judge_signals`).
    """
    from nnunet_medaka.pseudolabel.signals import judge_signals

    folder = Path(pseudolabels)
    summary = read_json(folder / SUMMARY_FILE, what="the pseudo-labels' summary")
    out = {"cases": summary["finished"], "cases_for_student": len(summary["cases_for_student"]),
           "organs_accepted": summary["organs_accepted"], "organs_rejected": summary["organs_rejected"],
           "n": 0, "auroc": None, "spearman": None,
           "iou_accepted": summary.get("true_iou", {}).get("accepted_organs_mean"),
           "iou_rejected": summary.get("true_iou", {}).get("rejected_organs_mean"),
           "filter": summary.get("filter", "quality"), "filter_reason": summary.get("filter_reason")}
    with open(folder / TABLE_FILE, newline="") as f:
        out["signals"] = judge_signals(list(csv.DictReader(f)), tau)
    judged = out["signals"]["signals"]
    if "p_good" in judged:
        out.update(n=judged["p_good"]["n"], auroc=judged["p_good"]["auroc"], spearman=judged["predicted_iou"]["spearman"])
    return out


def pseudolabel_view(source: os.PathLike | str, target: os.PathLike | str, *, cases: Optional[Sequence[str]] = None,
                     accept_all: bool = False) -> dict:
    """A pseudolabel folder derived from ``source`` without predicting again.

    Parameters
    ----------
    source, target : path
        A complete pseudolabel folder, and the new one (replaced if it exists).
    cases : sequence of str, optional
        Keep only these cases of ``source`` (a smaller unlabeled pool, e.g. ``experiment``'s ``pool_size``); default
        every case. Unknown cases are an error.
    accept_all : bool
        Accept every case. ``source`` must then have been made with ``acceptance`` ``case`` or ``none``: its label
        files are the teacher's argmax for every case, rejected ones included (with voxel gating, the same gated
        maps). Otherwise every decision is kept as it was.

    The label files are hard-linked, the records copied (scores and true IoU kept), and the table and summary
    written as ``pseudolabel`` would (with ``--acceptance none`` when ``accept_all``); ``build-student`` reads it like
    any pseudolabel folder.

    Returns
    -------
    dict
        The summary of the new folder.
    """
    from nnunet_medaka.files import link_or_copy, staged_folder

    source, target = Path(source), Path(target)
    settings = read_settings(source)
    if accept_all and settings["acceptance"] not in ("case", "none"):
        raise MedakaError(f"{source}: acceptance {settings['acceptance']!r} rewrote rejected organs; an accept-all "
                          "view needs acceptance case or none")
    keep = list(settings["cases"]) if cases is None else list(cases)
    unknown = sorted(set(keep) - set(settings["cases"]))
    if unknown:
        raise MedakaError(f"{source}: no case {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''} among its "
                          f"{len(settings['cases'])} pseudo-labeled cases; choose cases it has")
    records, failures = read_records(source, keep)
    view = {"cases": keep, "derived_from": str(source),
            **({"acceptance": "none", "threshold": None} if accept_all else {})}
    with staged_folder(target, overwrite=True) as staging:
        for sub in ("labels", "records", "failures", "runs"):
            (staging / sub).mkdir()
        write_json_atomic(staging / SETTINGS_FILE, {**settings, **view})
        for case, record in records.items():
            link_or_copy(source / record["label_file"], staging / record["label_file"])
            if accept_all:
                # case or none acceptance rewrote no organ: ignored voxels there come from voxel gating, and stay
                record = {**record, "organs": [{**o, "decision": "accept"} for o in record["organs"]],
                          "case_decision": "accept"}
            write_record(staging, record)
        for case, failure in failures.items():
            write_json_atomic(staging / "failures" / f"{case}.json", failure)
        summary = write_results(staging)
    return summary
