"""``nnunet-medaka config``: create, edit, validate and show a dataset's plugin config file."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from nnunet_medaka.config import CONFIG_ENV_VAR, config_path, load_config, parse_assignment, update_config_file
from nnunet_medaka.environment import nnunet_folder
from nnunet_medaka.errors import MedakaError

__all__ = ["preprocessed_dataset_folder"]


def preprocessed_dataset_folder(dataset: str) -> Path:
    """``nnUNet_preprocessed/DatasetXXX_Name`` for a dataset id (``4``, ``004``) or full name.

    Raises
    ------
    MedakaError
        If ``nnUNet_preprocessed`` is unset, or no (or more than one) matching folder exists.
    """
    root = nnunet_folder("nnUNet_preprocessed")
    if dataset.isdigit():
        matches = sorted(root.glob(f"Dataset{int(dataset):03d}_*"))
    else:
        matches = [root / dataset] if (root / dataset).is_dir() else []
    matches = [m for m in matches if m.is_dir()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise MedakaError(f"dataset {dataset!r}: no folder in nnUNet_preprocessed={root}; "
                          f"run `nnUNetv2_plan_and_preprocess -d {dataset}` first")
    raise MedakaError(f"dataset {dataset!r}: several folders match in {root}: {', '.join(m.name for m in matches)}; give the full name")


def _run_config(args: argparse.Namespace) -> int:
    folder = preprocessed_dataset_folder(args.dataset)
    path = config_path(folder)
    if os.environ.get(CONFIG_ENV_VAR):
        print(f"note: {CONFIG_ENV_VAR} is set, so this edits {path}")
    if args.set:
        config = update_config_file(path, [parse_assignment(a) for a in args.set])
        print(f"wrote {path}")
    else:
        config, found = load_config(folder)
        if found is None:
            print(f"{path} does not exist yet: all defaults apply (create it with --set KEY=VALUE)")
        else:
            print(f"{path} is valid")
    if args.show or not args.set:
        print(json.dumps(config.to_dict(), indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="create, edit, validate or show a dataset's nnunet_medaka.json (read by the plugin trainers)",
        description=f"The file lives in nnUNet_preprocessed/DatasetXXX_Name/nnunet_medaka.json "
        f"(or where ${CONFIG_ENV_VAR} points). Without --set it validates and shows the resolved settings.",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set a key (JSON value, e.g. num_epochs=50, teacher_folds=[0,1], mirroring=false; KEY=null resets); repeatable")
    p.add_argument("--show", action="store_true", help="print the resolved settings after --set")
    p.set_defaults(func=_run_config)
