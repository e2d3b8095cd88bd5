"""Environment nnU-Net needs to find the plugin (``nnUNet_extTrainer``, the three data folders), and running
nnU-Net's own commands with it: ``nnunet-medaka env``, and ``nnunet-medaka train|predict``, which call nnU-Net's
entry points with every argument passed through unchanged (``nnunet-medaka train 1 3d_fullres 0 -tr KDTrainer``
is exactly ``nnUNetv2_train 1 3d_fullres 0 -tr KDTrainer`` for users who have not exported ``nnUNet_extTrainer``)."""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Mapping, Optional

from nnunet_medaka import ext_trainer_dir
from nnunet_medaka.errors import MedakaError

EXT_TRAINER_VAR = "nnUNet_extTrainer"
NNUNET_PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")

__all__ = ["EXT_TRAINER_VAR", "NNUNET_PATH_VARS", "PASSTHROUGH", "add_passthrough_parsers", "make_nnunet_folders", "merged_ext_trainer", "nnunet_predictor", "nnunet_folder",
           "planning_environ", "plugin_environ", "preprocessed_dataset_folder", "run_nnunet_entry", "run_stock_command",
           "stock_command", "temporary_environ"]


@contextlib.contextmanager
def temporary_environ(**values: Optional[str]):
    """Set environment variables for the duration of a ``with`` block (a None value leaves a variable as it is),
    then restore every one of them, e.g. around building nnU-Net's in-process predictor."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def merged_ext_trainer(current: Optional[str]) -> str:
    """``nnUNet_extTrainer`` with the plugin's folder first and earlier entries kept (no duplicates)."""
    ours = str(ext_trainer_dir())
    others = [p for p in (current or "").split(os.pathsep) if p and os.path.abspath(p) != ours]
    return os.pathsep.join([ours, *others])


# nnU-Net's class search (trainer lookup) walks and edits sys.modules, and the environment and stdout swaps around it
# are process-wide: steps that run side by side in one process (experiment's parallel units) take turns here. Two
# pseudolabel steps at once crashed with "dictionary changed size during iteration".
_NNUNET_LOOKUP = threading.RLock()


def nnunet_lookup():
    """A lock around anything that makes nnU-Net search for a class (re-entrant; shared by the whole process)."""
    return _NNUNET_LOOKUP


def nnunet_predictor(model_folder: os.PathLike | str, folds, checkpoint: str, *, device, mirroring: bool,
                     tile_step_size: float = 0.5):
    """nnU-Net's in-process predictor of a trained model folder: the plugin's trainers visible, ``torch.compile`` off
    on a CPU (it costs more than it saves there), nnU-Net's prints silenced, and thread-safe (`nnunet_lookup`)."""
    import io

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    compile_flag = "f" if device.type == "cpu" else os.environ.get("nnUNet_compile")
    with nnunet_lookup(), temporary_environ(nnUNet_compile=compile_flag,
                                            **{EXT_TRAINER_VAR: merged_ext_trainer(os.environ.get(EXT_TRAINER_VAR))}), \
            contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                    perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model_folder), list(folds), checkpoint)
    return predictor


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


def add_passthrough_parsers(subparsers: argparse._SubParsersAction) -> None:
    for command, (script, _, _) in PASSTHROUGH.items():
        p = subparsers.add_parser(
            command, add_help=False,
            help=f"run {script} with the plugin trainers visible (all arguments passed through; --help shows nnU-Net's)",
        )
        p.add_argument("nnunet_args", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, c=command: run_nnunet_entry(c, args.nnunet_args))
