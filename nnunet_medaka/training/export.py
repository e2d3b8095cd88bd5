"""``nnunet-medaka export-plain``: a copy of a trained model that plain nnU-Net (no plugin) can predict with.

nnU-Net's predictor builds the network through the class named in each checkpoint's ``trainer_name``. The
plugin's trainers keep nnU-Net's architecture, so the copy only renames that entry to ``nnUNetTrainer``, after
checking that every checkpoint's weights load into the network stock ``nnUNetTrainer`` builds from the plans.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from nnunet_medaka.files import write_json_atomic
from nnunet_medaka.errors import MedakaError

__all__ = ["export_plain", "add_parser"]

log = logging.getLogger(__name__)
STOCK_TRAINER = "nnUNetTrainer"
EXPORT_INFO_FILE = "nnunet_medaka_export.json"


def _copy_prediction_files(source: Path, out: Path) -> list:
    """Copy the top-level JSON files and each fold's checkpoints and JSON files; returns the copied checkpoints."""
    out.mkdir(parents=True)
    for f in source.glob("*.json"):
        shutil.copy2(f, out / f.name)
    checkpoints = []
    for fold in sorted(p for p in source.glob("fold_*") if p.is_dir()):
        (out / fold.name).mkdir()
        for f in sorted(fold.glob("*.json")):
            shutil.copy2(f, out / fold.name / f.name)
        for f in sorted(fold.glob("*.pth")):
            shutil.copy2(f, out / fold.name / f.name)
            checkpoints.append(out / fold.name / f.name)
    return checkpoints


def export_plain(model_folder, out_folder) -> dict:
    """Write a copy of ``model_folder`` whose checkpoints name the stock ``nnUNetTrainer``.

    Parameters
    ----------
    model_folder : path
        A trained model folder, ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``.
    out_folder : path
        The new model folder (must not exist). To predict with ``nnUNetv2_predict -tr nnUNetTrainer``, name it
        ``nnUNet_results/DatasetXXX_Name/nnUNetTrainer__Plans__configuration``; any name works with
        ``nnUNetv2_predict_from_modelfolder -m OUT``.

    Returns
    -------
    dict
        What was exported: source, output, original trainer names, checkpoints.

    Raises
    ------
    MedakaError
        If the source is not a model folder, the output exists, or a checkpoint's weights do not fit the stock
        network (a trainer with a custom architecture cannot be exported this way).
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    source, out = Path(model_folder).expanduser().resolve(), Path(out_folder).expanduser().resolve()
    for name in ("plans.json", "dataset.json"):
        if not (source / name).is_file():
            raise MedakaError(f"{source / name}: missing; MODEL_FOLDER must be a trained nnU-Net model folder "
                              "(nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration)")
    if not any(source.glob("fold_*/*.pth")):
        raise MedakaError(f"{source}: no fold_*/*.pth checkpoints to export; train at least one fold first")
    if out.exists():
        raise MedakaError(f"{out}: already exists; choose a new OUT folder or delete it")
    plans = json.loads((source / "plans.json").read_text())
    dataset_json = json.loads((source / "dataset.json").read_text())
    pm = PlansManager(plans)
    networks = {}
    checkpoints = _copy_prediction_files(source, out)
    original = {}
    try:
        for path in checkpoints:
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:  # a truncated or foreign file: say which one
                first = (str(e).splitlines() or [""])[0]
                raise MedakaError(f"{source / path.relative_to(out)}: cannot be loaded as an nnU-Net checkpoint "
                                  f"({type(e).__name__}: {first}); the file is truncated or corrupt: copy it again "
                                  "or finish that training") from None
            configuration = ckpt["init_args"]["configuration"]
            if configuration not in networks:
                cm = pm.get_configuration(configuration)
                networks[configuration] = nnUNetTrainer.build_network_architecture(
                    pm, cm, determine_num_input_channels(pm, cm, dataset_json),
                    pm.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
            try:
                networks[configuration].load_state_dict(ckpt["network_weights"])
            except RuntimeError as e:
                raise MedakaError(f"{source / path.relative_to(out)}: trained by {ckpt['trainer_name']}, whose network "
                                  f"differs from stock nnUNetTrainer's ({str(e).splitlines()[0]}); "
                                  "it cannot be exported for plain nnU-Net") from None
            original[str(path.relative_to(out))] = ckpt["trainer_name"]
            ckpt["trainer_name"] = STOCK_TRAINER
            torch.save(ckpt, path)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    info = {"source": str(source), "output": str(out), "trainer_name_now": STOCK_TRAINER,
            "original_trainer_names": original}
    write_json_atomic(out / EXPORT_INFO_FILE, info)
    return info


def _run_export(args: argparse.Namespace) -> int:
    info = export_plain(args.model_folder, args.out)
    log.info("exported %d checkpoint(s) to %s (trainer_name now %s)", len(info["original_trainer_names"]),
             info["output"], STOCK_TRAINER)
    log.info("predict without the plugin: nnUNetv2_predict_from_modelfolder -i IN -o OUT_PRED -m %s", info["output"])
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-plain",
        help="copy a trained model so that plain nnU-Net (without this plugin) can predict with it",
        description="Copy plans, dataset.json and fold checkpoints of MODEL_FOLDER to OUT, renaming the trainer in "
        "every checkpoint to the stock nnUNetTrainer (after checking the weights fit its network). Name OUT "
        "nnUNet_results/DatasetXXX_Name/nnUNetTrainer__PLANS__CONFIGURATION to use `nnUNetv2_predict -tr "
        "nnUNetTrainer`, or use `nnUNetv2_predict_from_modelfolder -m OUT`.",
    )
    p.add_argument("model_folder", metavar="MODEL_FOLDER", help="trained model folder (Trainer__Plans__configuration)")
    p.add_argument("out", metavar="OUT", help="new model folder to write (must not exist)")
    p.set_defaults(func=_run_export)
