"""File helpers every stage shares: atomic writes, JSON read with a clear error, staged folders, owned folders.

Each writer of the plugin follows the same rules: a file is written through a temporary file and a rename, a
folder is built in a hidden staging folder beside its target and renamed into place when complete, and an output
folder that does not carry the marker of the command that wrote it is never replaced without ``--overwrite``.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import threading
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from nnunet_medaka.errors import MedakaError

__all__ = ["check_complete", "claim_folder", "files_fingerprint", "fingerprint", "link_or_copy", "read_json", "remove", "resolve_device", "staged_folder",
           "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: os.PathLike | str, text: str) -> None:
    """Write text through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    # process and thread in the name: simultaneous writers (threads of one run) never share a temporary file
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a temporary left beside the target
        raise


def write_json_atomic(path: os.PathLike | str, data: Any) -> None:
    """Write JSON (indented, newline at the end) atomically; see `write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: os.PathLike | str, *, what: str = "a JSON file", fix: str = "", expect: Optional[type] = dict
              ) -> Any:
    """Parse a JSON file, or raise one `MedakaError` naming the file, what it should be and what to do.

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, for the message (e.g. ``"the run's state"``).
    fix : str
        What the user can do about a missing or broken file.
    expect : type, optional
        The type of the top-level value (default a JSON object); None accepts any.
    """
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MedakaError(f"{path}: missing ({what}){tail}") from None
    except IsADirectoryError:
        raise MedakaError(f"{path}: is a folder, expected {what}{tail}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MedakaError(f"{path}: cannot be read ({what}: {getattr(e, 'strerror', None) or e}){tail}") from None
    except ValueError as e:
        raise MedakaError(f"{path}: not valid JSON ({what}: {e}){tail}") from None
    if expect is not None and not isinstance(data, expect):
        raise MedakaError(f"{path}: expected a JSON {'object' if expect is dict else expect.__name__} ({what}), got "
                          f"{type(data).__name__}{tail}")
    return data


def check_complete(path: os.PathLike | str) -> None:
    """Raise a `MedakaError` naming ``path`` when a gzip-compressed file (``.nii.gz``, ...) is truncated or corrupt.

    Readers such as ITK fill the missing part of a truncated ``.nii.gz`` with zeros instead of failing, so a file is
    read through to its end (and its checksum checked) once before it is trusted."""
    path = Path(path)
    if path.suffix != ".gz":
        return
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise MedakaError(f"{path}: truncated or corrupt ({type(e).__name__}: {e}); copy or convert it again") from None


def fingerprint(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted), shortened to 16 hex digits."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_fingerprint(paths: Iterable[os.PathLike | str]) -> str:
    """Fingerprint of files and folders by name, size and modification time (not content: volumes are large).

    Folders contribute every file below them; a missing path counts as missing, so creating it changes the value.
    """
    entries = []
    for root in sorted(Path(p) for p in paths):
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root] if root.is_file() else []
        entries += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        if not root.exists():
            entries.append((str(root), "missing"))
    return fingerprint(entries)


def remove(*paths: os.PathLike | str) -> None:
    """Delete files and folders; missing ones are fine."""
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def link_or_copy(source: os.PathLike | str, target: os.PathLike | str) -> None:
    """A hard link (no second copy of a volume), or a copy where the file system has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _dead_partials(target: Path) -> list:
    """Staging folders of ``target`` left by processes that no longer run (killed with SIGKILL)."""
    stale = []
    for p in target.parent.glob(f".{target.name}.partial-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            stale.append(p)
    return stale


@contextlib.contextmanager
def staged_folder(target: os.PathLike | str, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``target`` that becomes ``target`` when the block succeeds.

    On any exception (Ctrl-C included) the staging folder is deleted and ``target`` is untouched; staging folders
    that killed earlier processes left for the same target are removed first.

    Raises
    ------
    MedakaError
        If ``target`` exists and ``overwrite`` is False.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise MedakaError(f"{target}: already exists; pass --overwrite to replace it, or choose another name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MedakaError(f"{target.parent}: is a file, expected a folder to write {target.name} into; choose "
                          "another output folder") from None
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    remove(staging, *_dead_partials(target))
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def claim_folder(out: Path, markers: Sequence[str], *, what: str, option: str = "--out",
                 overwrite: bool = False) -> bool:
    """Check that ``out`` may receive a command's output: absent or empty, or marked by one of ``markers`` (the
    command's own files: resumed), or replaced because ``overwrite`` is set. Nothing is written.

    Returns
    -------
    bool
        True when ``out`` holds a marker (an earlier output of the command to resume).

    Raises
    ------
    MedakaError
        For a file, or a non-empty folder without a marker, unless ``overwrite``.
    """
    if any((out / m).is_file() for m in markers):
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        kind = "is a file" if not out.is_dir() else f"exists and holds no {markers[0]}"
        raise MedakaError(f"{out}: {kind} (not {what}); choose another {option} or pass --overwrite to replace it")
    return False


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; other names unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
