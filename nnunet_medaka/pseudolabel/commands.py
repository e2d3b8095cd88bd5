"""The thin command line of the pseudo-label stage: ``nnunet-medaka pseudolabel`` (`predict.pseudolabel`) and
``nnunet-medaka pseudolabel-merge`` (`outputs.merge_pseudolabels`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_medaka.pseudolabel.acceptance import ACCEPTANCE_MODES
from nnunet_medaka.pseudolabel.outputs import FAILED_FILE, TABLE_FILE, merge_pseudolabels
from nnunet_medaka.pseudolabel.predict import FILTERS, pseudolabel

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    result = pseudolabel(
        args.teacher, args.input, args.output, folds=args.folds, checkpoint=args.checkpoint,
        quality_model=args.quality_model, acceptance=args.acceptance, threshold=args.threshold,
        ignore_band=args.ignore_band, band_probability=args.band_probability, ground_truth=args.ground_truth,
        teacher_raw=args.teacher_raw, mirroring=not args.disable_tta, tile_step_size=args.step_size,
        device=args.device, num_parts=args.num_parts, part_id=args.part_id, overwrite=args.overwrite,
        progress=not args.quiet, filter_by=args.filter, voxel_confidence=args.voxel_confidence,
    )
    rate = f", {result['cases_per_second']:.3f} cases/s" if result["cases_per_second"] else ""
    print(f"{result['output']}: {result['processed']} case(s) pseudo-labelled, {result['skipped']} already done"
          f"{rate}")
    if "summary" in result:
        s = result["summary"]
        print(f"acceptance {s['acceptance']}: {s['cases_accepted']} accepted, {s['cases_partial']} partial, "
              f"{s['cases_rejected']} rejected of {s['finished']} case(s); table: {Path(result['output']) / TABLE_FILE}")
        failed = s["failed"]
    else:
        failed = sorted(result["failed"])
    if failed:
        print(f"{len(failed)} case(s) could not be read and were skipped: {', '.join(failed)} "
              f"(see {Path(result['output']) / FAILED_FILE}); fix them and run the same command again")
        return 1
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    summary = merge_pseudolabels(args.output, args.parts or ())
    print(f"{Path(args.output) / TABLE_FILE}: {summary['finished']} case(s); {summary['cases_accepted']} accepted, "
          f"{summary['cases_partial']} partial, {summary['cases_rejected']} rejected")
    if summary["failed"]:
        print(f"{len(summary['failed'])} case(s) failed: {', '.join(summary['failed'])}")
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pseudolabel",
        help="teacher predicts unlabeled images; quality scores, accept/reject, pseudolabels.csv (resumable, shardable)",
        description="Runs nnU-Net's predictor (the teacher's fold ensemble) on unlabeled images, scores each "
        "prediction with the quality model while its probabilities are in memory, and writes the label maps, "
        "records and pseudolabels.csv into OUTPUT. Run the same command again to resume after an interruption.",
    )
    p.add_argument("-m", "--teacher", required=True, metavar="MODEL_FOLDER",
                   help="teacher model folder nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration")
    p.add_argument("-f", "--folds", nargs="+", default=["0"], help="teacher folds to ensemble (default 0; 'all' allowed)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("-i", "--input", required=True, metavar="IMAGES",
                   help="folder of CASE_0000<ending> images, or a raw dataset declaring unlabeled_images (imagesUnlabeled/)")
    p.add_argument("-o", "--output", required=True, help="output folder (labels/, records/, pseudolabels.csv)")
    p.add_argument("-q", "--quality-model", metavar="PATH", help="quality model file or folder (nnunet-medaka qc train)")
    p.add_argument("--acceptance", choices=ACCEPTANCE_MODES,
                   help="case: drop cases with a rejected organ; organ: rejected organs (+ band) become the ignore "
                   "label; none: accept all (default: case with --quality-model, none without)")
    p.add_argument("--filter", choices=FILTERS, default="quality",
                   help="what decides: the quality model's P(good) (default), a label-free signal of the "
                   "teacher's ensemble (fold_agreement, soft_dice_confidence, mean_max_softmax), or auto: whichever "
                   "ranked the teacher's out-of-fold predictions best when `qc train` fitted the quality model "
                   "(the classifier only when it beats every signal)")
    p.add_argument("--threshold", type=float,
                   help="accept an organ when its score (P(good) or the --filter signal) >= this (default: the "
                   "quality model's, chosen by `qc train`)")
    p.add_argument("--voxel-confidence", type=float, metavar="P",
                   help="voxel gating, any acceptance: voxels whose ensemble top probability is below P become the "
                   "ignore label in the label maps written (default: off)")
    p.add_argument("--ignore-band", type=int, default=2, metavar="VOXELS",
                   help="organ acceptance: dilate a rejected organ by this many voxels into the ignore region (default 2)")
    p.add_argument("--band-probability", type=float, default=0.1, metavar="P",
                   help="organ acceptance: voxels where the rejected organ has probability >= P are ignored too (default 0.1)")
    p.add_argument("--ground-truth", metavar="DIR", help="labels of the unlabeled images, for the true_iou column only")
    p.add_argument("--teacher-raw", metavar="DIR", help="teacher's raw dataset (default $nnUNet_raw/<teacher dataset>)")
    p.add_argument("--disable-tta", action="store_true", help="no test-time mirroring (8x faster in 3D)")
    p.add_argument("-step_size", "--step-size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    p.add_argument("-device", "--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: cuda if available")
    p.add_argument("-num_parts", "--num-parts", type=int, default=1, help="shard over N processes/machines (default 1)")
    p.add_argument("-part_id", "--part-id", type=int, default=0, help="this shard, 0..N-1 (default 0)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing output made with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

    m = subparsers.add_parser(
        "pseudolabel-merge",
        help="after a sharded pseudolabel run: check every part finished and write pseudolabels.csv + summary",
        description="Writes OUTPUT/pseudolabels.csv and pseudolabel_summary.json from the per-case records; "
        "identical to what one unsharded run writes. Parts run on other machines are copied in with --from.",
    )
    m.add_argument("output", metavar="OUTPUT", help="the pseudolabel output folder")
    m.add_argument("--from", dest="parts", nargs="+", metavar="DIR", help="output folders of parts that ran elsewhere")
    m.set_defaults(func=_run_merge)
