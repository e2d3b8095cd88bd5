"""``nnunet-medaka train|predict``: nnU-Net's own entry points with the plugin's trainer folder set.

Every argument goes through unchanged, so ``nnunet-medaka train 1 3d_fullres 0 -tr KDTrainer`` is
exactly ``nnUNetv2_train 1 3d_fullres 0 -tr KDTrainer`` for users who have not exported
``nnUNet_extTrainer``.
"""
from __future__ import annotations

import argparse
import os
import sys

from nnunet_medaka.environment import EXT_TRAINER_VAR, merged_ext_trainer
from nnunet_medaka.errors import MedakaError

# subcommand -> (nnU-Net console script, module, entry function)
PASSTHROUGH = {
    "train": ("nnUNetv2_train", "nnunetv2.run.run_training", "run_training_entry"),
    "predict": ("nnUNetv2_predict", "nnunetv2.inference.predict_from_raw_data", "predict_entry_point"),
}


def run_nnunet_entry(command: str, argv: list) -> int:
    """Call nnU-Net's entry point for ``command`` in this process with ``argv`` and the plugin visible."""
    import importlib

    script, module, function = PASSTHROUGH[command]
    os.environ[EXT_TRAINER_VAR] = merged_ext_trainer(os.environ.get(EXT_TRAINER_VAR))
    entry = getattr(importlib.import_module(module), function)
    saved = sys.argv
    sys.argv = [script, *argv]
    try:
        result = entry()
    except SystemExit as e:  # argparse --help / errors inside nnU-Net
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return result if isinstance(result, int) else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for command, (script, _, _) in PASSTHROUGH.items():
        p = subparsers.add_parser(
            command, add_help=False,
            help=f"run {script} with the plugin trainers visible (all arguments passed through; --help shows nnU-Net's)",
        )
        p.add_argument("nnunet_args", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, c=command: run_nnunet_entry(c, args.nnunet_args))


def stock_command(script: str) -> str:
    """Path of an nnU-Net console script from the running environment (falls back to PATH)."""
    import shutil

    candidate = os.path.join(os.path.dirname(sys.executable), script)
    found = candidate if os.path.isfile(candidate) else shutil.which(script)
    if not found:
        raise MedakaError(f"{script}: not found beside {sys.executable} nor on PATH; install nnunetv2 in this environment")
    return found


def run_stock_command(script: str, args: list, *, env: dict, log_file: os.PathLike) -> None:
    """Run a stock ``nnUNetv2_*`` command in a subprocess, its output going to ``log_file``.

    Raises
    ------
    MedakaError
        If it exits non-zero; the message holds the command, the log path and the log's last lines.
    """
    import subprocess

    cmd = [stock_command(script), *[str(a) for a in args]]
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        code = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        with open(log_file) as log:
            tail = "".join(log.readlines()[-15:])
        raise MedakaError(f"{' '.join(cmd)} failed (exit {code}); full log: {log_file}\n{tail}")
