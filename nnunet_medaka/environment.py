"""Environment nnU-Net needs to find the plugin: ``nnUNet_extTrainer`` and the three data folders."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Mapping, Optional

from nnunet_medaka import ext_trainer_dir
from nnunet_medaka.errors import MedakaError

EXT_TRAINER_VAR = "nnUNet_extTrainer"
NNUNET_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")

__all__ = ["EXT_TRAINER_VAR", "NNUNET_PATH_VARS", "make_nnunet_folders", "merged_ext_trainer", "nnunet_folder",
           "planning_environ", "plugin_environ"]


def merged_ext_trainer(current: Optional[str]) -> str:
    """``nnUNet_extTrainer`` with the plugin's folder first and earlier entries kept (no duplicates)."""
    ours = str(ext_trainer_dir())
    others = [p for p in (current or "").split(os.pathsep) if p and os.path.abspath(p) != ours]
    return os.pathsep.join([ours, *others])


def plugin_environ(base: Optional[Mapping[str, str]] = None, *, root: Optional[os.PathLike] = None) -> dict:
    """A copy of ``base`` (default ``os.environ``) in which nnU-Net finds the plugin trainers.

    Parameters
    ----------
    base : mapping, optional
        Environment to start from.
    root : path, optional
        If given, ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` are set to folders below it
        (created).
    """
    env = dict(os.environ if base is None else base)
    env[EXT_TRAINER_VAR] = merged_ext_trainer(env.get(EXT_TRAINER_VAR))
    if root is not None:
        env.update(make_nnunet_folders(root))
    return env


def make_nnunet_folders(root: os.PathLike | str) -> dict:
    """Create the three nnU-Net folders below ``root``; returns their variables and paths."""
    root = Path(root).expanduser().resolve()
    paths = {var: root / var for var in NNUNET_PATH_VARS}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    return {var: str(path) for var, path in paths.items()}


def planning_environ(env: Mapping[str, str]) -> dict:
    """``env`` for ``nnUNetv2_plan_and_preprocess``: without ``nnUNet_n_proc_DA``, which crashes its planner when
    set to 0 (nnU-Net 2.8.1 calls ``torch.set_num_threads(0)``); the variable only matters for training."""
    return {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}


def nnunet_folder(var: str) -> Path:
    """The folder an nnU-Net path variable names, with an error that says how to set it."""
    value = os.environ.get(var)
    if not value:
        raise MedakaError(f"{var} is not set; export it (e.g. `eval \"$(nnunet-medaka env --root ~/nnunet_data)\"`)")
    return Path(value)


def _run_env(args: argparse.Namespace) -> int:
    lines = [f"export {EXT_TRAINER_VAR}={shlex.quote(merged_ext_trainer(os.environ.get(EXT_TRAINER_VAR)))}"]
    if args.root:
        for var, path in make_nnunet_folders(args.root).items():
            lines.append(f"export {var}={shlex.quote(path)}")
    print("\n".join(lines))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "env",
        help="print shell lines that let the stock nnUNetv2_* commands find the plugin trainers",
        description='Print `export` lines for bash/zsh. Use as: eval "$(nnunet-medaka env)". '
        "An existing nnUNet_extTrainer value is kept after the plugin's folder.",
    )
    p.add_argument("--root", metavar="DIR", help="also set nnUNet_raw/_preprocessed/_results to folders below DIR (created)")
    p.set_defaults(func=_run_env)
