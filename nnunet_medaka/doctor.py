"""``nnunet-medaka doctor``: is this environment able to run the plugin through stock nnU-Net?

Each check returns a :class:`Check`; ``run_checks`` collects them all (one failure does not hide the
next) and the CLI prints a table, then the fix for the first failure on one line.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

from nnunet_medaka.environment import EXT_TRAINER_VAR, NNUNET_PATH_VARS

MIN_NNUNET = (2, 8, 1)
PLUGIN_TRAINERS = ("SupervisedTrainer", "KDTrainer")

__all__ = ["Check", "run_checks", "PLUGIN_TRAINERS"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_nnunet_version() -> Check:
    try:
        version = metadata.version("nnunetv2")
    except metadata.PackageNotFoundError:
        return Check("nnunetv2", False, "not installed", "pip install 'nnunetv2>=2.8.1'")
    ok = _version_tuple(version) >= MIN_NNUNET
    return Check("nnunetv2", ok, version, "" if ok else "pip install --upgrade 'nnunetv2>=2.8.1' (nnUNet_extTrainer support)")


def check_torch() -> Check:
    try:
        import torch
        import torchvision  # noqa: F401  (nnU-Net's trainer search imports it through timm)
        from torchvision.ops import nms  # noqa: F401
    except Exception as e:  # the install trap surfaces as RuntimeError, ImportError or OSError
        return Check("torch + torchvision", False, f"{type(e).__name__}: {e}".splitlines()[0][:160],
                     "install a matching pair: pip install torch==2.14.1 torchvision==0.29.1 (see docs/getting-started/troubleshooting.md)")
    return Check("torch + torchvision", True, f"torch {torch.__version__}, torchvision {torchvision.__version__}")


def check_cuda() -> Check:
    try:
        import torch
    except Exception:
        return Check("CUDA", False, "torch not importable", required=False)
    if torch.cuda.is_available():
        return Check("CUDA", True, f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}", required=False)
    return Check("CUDA", False, "no GPU visible: training runs on CPU (slow; pass -device cpu)", required=False)


def check_paths() -> list[Check]:
    checks = []
    for var in NNUNET_PATH_VARS:
        value = os.environ.get(var)
        if not value:
            checks.append(Check(var, False, "not set", f'export {var}=/path/to/{var} (or: eval "$(nnunet-medaka env --root DIR)")'))
            continue
        path = Path(value)
        if path.exists() and not path.is_dir():
            checks.append(Check(var, False, f"{value}: is a file, not a folder", f"point {var} at a folder (not {value})"))
            continue
        if not path.is_dir():
            checks.append(Check(var, False, f"{value}: no such folder", f"mkdir -p {value}"))
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=path):
                pass
        except OSError as e:
            checks.append(Check(var, False, f"{value}: not writable ({e.strerror})", f"make {value} writable or point {var} elsewhere"))
            continue
        checks.append(Check(var, True, value))
    return checks


def check_ext_trainer_var() -> Check:
    from nnunet_medaka import ext_trainer_dir

    ours = str(ext_trainer_dir())
    entries = [os.path.abspath(p) for p in os.environ.get(EXT_TRAINER_VAR, "").split(os.pathsep) if p]
    if ours in entries:
        return Check(EXT_TRAINER_VAR, True, os.environ[EXT_TRAINER_VAR])
    seen = os.environ.get(EXT_TRAINER_VAR) or "not set"
    return Check(EXT_TRAINER_VAR, False, f"{seen} (plugin folder {ours} missing)", 'eval "$(nnunet-medaka env)"')


def check_trainer_lookup(name: str) -> Check:
    """Ask nnU-Net's own lookup, as nnUNetv2_train/predict would with the current environment."""
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates every module it imports
            cls = recursive_find_trainer_class_by_name(name)
    except RuntimeError as e:
        if "Could not find" not in str(e):
            raise
        where = os.environ.get(EXT_TRAINER_VAR) or "unset"
        return Check(f"-tr {name}", False, f"nnU-Net's lookup does not find it (nnUNet_extTrainer={where})",
                     'eval "$(nnunet-medaka env)"')
    except Exception as e:  # a module on nnUNet_extTrainer that fails to import aborts nnU-Net's whole search
        message = f"{type(e).__name__}: {e}".splitlines()[0][:160]
        return Check(f"-tr {name}", False, f"nnU-Net's lookup crashed: {message}",
                     f"fix or remove the failing module on {EXT_TRAINER_VAR} (nnU-Net imports every file there)")
    if not cls.__module__.startswith("nnunet_medaka."):
        return Check(f"-tr {name}", False, f"nnU-Net found a different {name} in {cls.__module__}",
                     f"remove or rename the other {name} so the plugin's is found")
    return Check(f"-tr {name}", True, f"{cls.__module__}.{cls.__name__}")


def run_checks(*, trainers: tuple = PLUGIN_TRAINERS, progress: Optional[Callable[[str], None]] = None) -> list[Check]:
    """Run every check and return them all, failed ones included.

    Parameters
    ----------
    trainers : tuple of str
        Trainer class names nnU-Net must find.
    progress : callable, optional
        Called with each check's name before it runs (the lookups take seconds).
    """
    checks = [check_nnunet_version(), check_torch(), check_ext_trainer_var()]
    if checks[0].ok and checks[1].ok:
        for name in trainers:
            if progress:
                progress(f"asking nnU-Net to find -tr {name} ...")
            checks.append(check_trainer_lookup(name))
    return [*checks, *check_paths(), check_cuda()]


def _run_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(progress=None if args.quiet else (lambda m: print(m, flush=True)))
    width = max(len(c.name) for c in checks)
    for c in checks:
        status = "ok" if c.ok else ("FAIL" if c.required else "note")
        print(f"{status:>4}  {c.name:<{width}}  {c.detail}")
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        print(f"fix: {failed[0].fix}")
        return 1
    print("nnunet-medaka is ready: the stock nnUNetv2_* commands will find the plugin trainers.")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check nnU-Net version, trainer discovery, nnU-Net folders, torch/torchvision and CUDA",
        description="Exit 0 when the stock nnUNetv2_* commands can use the plugin here, else 1 and one line saying the fix.",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines, just the table")
    p.set_defaults(func=_run_doctor)
