"""``nnunet-medaka`` command line: argparse subcommands, one module each, in data-flow order.

Each entry of ``SUBCOMMANDS`` names a module and its function ``(subparsers)`` that registers its
subcommands and sets ``func`` (taking the parsed namespace, returning an exit status). Modules keep
heavy imports (torch, nnU-Net) inside functions so that ``nnunet-medaka env`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from nnunet_medaka import __version__
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.environment import PASSTHROUGH, run_nnunet_entry

# (module, function registering its subcommands), shared pieces first, then the stages in data-flow order
SUBCOMMANDS = (
    ("nnunet_medaka.environment", "add_parser"),  # env
    ("nnunet_medaka.doctor", "add_parser"),  # doctor
    ("nnunet_medaka.config", "add_parser"),  # config
    ("nnunet_medaka.conversion.phantom", "add_parser"),  # phantom
    ("nnunet_medaka.conversion.convert", "add_parser"),  # convert
    ("nnunet_medaka.conversion.split", "add_parser"),  # split
    ("nnunet_medaka.environment", "add_passthrough_parsers"),  # train, predict
    ("nnunet_medaka.training.export", "add_parser"),  # export-plain
    ("nnunet_medaka.quality.commands", "add_parser"),  # qc train|score|evaluate
    ("nnunet_medaka.pseudolabel.commands", "add_parser"),  # pseudolabel, pseudolabel-merge
    ("nnunet_medaka.pseudolabel.student", "add_parser"),  # build-student
    ("nnunet_medaka.pipeline.run", "add_parser"),  # run
    ("nnunet_medaka.pipeline.experiment_command", "add_parser"),  # experiment
    ("nnunet_medaka.pipeline.demo", "add_parser"),  # demo
    ("nnunet_medaka.report.page", "add_parser"),  # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-medaka",
        description="Knowledge-distillation teacher/student training for nnU-Net v2 (Bhatt et al., ISBI 2023).",
    )
    parser.add_argument("--version", action="version", version=f"nnunet-medaka {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, function in SUBCOMMANDS:
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


_HANDLER_PID: Optional[int] = None  # the process that installed `_terminated`


def _terminated(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so every staging folder on the way out is removed (a SIGKILL's are removed
    by the next run that writes the same target).

    Processes forked from this one inherit the handler: nnU-Net's own pools (e.g. the one listing a raw dataset's
    files) end their workers with SIGTERM, and a worker that raised here instead of dying could hold the pool's
    queue lock and hang the pool's shutdown for ever. Those die as SIGTERM's default would."""
    if os.getpid() != _HANDLER_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def install_sigterm_handler() -> None:
    """From now on SIGTERM unwinds this process like Ctrl-C (`_terminated`); call it from the main thread."""
    global _HANDLER_PID
    _HANDLER_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminated)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:  # nnU-Net parses these itself, --help included
        return run_nnunet_entry(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if threading.current_thread() is threading.main_thread():
        install_sigterm_handler()
    try:
        return int(args.func(args) or 0)
    except MedakaError as e:
        print(f"nnunet-medaka {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    sys.exit(main())
