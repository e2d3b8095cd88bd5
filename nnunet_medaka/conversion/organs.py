"""The organ list: organ names, their label values, and which mask files belong to each.

An organ list is a JSON or YAML file mapping each organ name to its label value, optionally with
file-name patterns for per-organ masks::

    organs:
      eye_left:  {label: 1, patterns: ["*eye_l*", "*lefteye*"]}
      eye_right: {label: 2, patterns: ["*eye_r*"]}
      brain: 3                     # shorthand: label value only

The top-level ``organs`` key may be left out (the whole file is then the mapping). ``label`` is the
value the organ has in a multi-label volume (any distinct positive integers); a per-organ mask file
belongs to the organ whose pattern (shell-style, case-insensitive, matched against the file or
folder name) matches it. Without patterns an organ matches a mask whose name, minus the suffix, is
the organ name or ends with ``_<name>``, ``-<name>`` or ``.<name>`` (``fish01_brain.tif``).

nnU-Net needs consecutive labels, so organs get output labels 1..N in order of their label values
(background is 0); the conversion records the original values in ``dataset.json``.
"""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.conversion.volume_io import strip_volume_suffix

__all__ = ["Organ", "OrganList", "find_organ_list", "load_organ_list", "organ_list_from_mapping", "parse_label_assignments"]

ORGAN_FILE_NAMES = ("organs.json", "organs.yaml", "organs.yml")


@dataclass(frozen=True)
class Organ:
    """One organ: its name, its value in source label volumes, and mask file-name patterns."""

    name: str
    value: int
    patterns: tuple = ()

    def matches(self, file_name: str) -> bool:
        """Whether a mask file or folder called ``file_name`` belongs to this organ."""
        lower = file_name.lower()
        if self.patterns:
            return any(fnmatch.fnmatchcase(lower, p.lower()) for p in self.patterns)
        stem, name = strip_volume_suffix(lower), self.name.lower()
        return stem == name or any(stem.endswith(sep + name) for sep in "_-.")


@dataclass(frozen=True)
class OrganList:
    """Organs in file order, with the nnU-Net labels they map to."""

    organs: tuple
    source: str = "organ list"

    @property
    def names(self) -> list:
        return [o.name for o in self.organs]

    def by_value(self) -> list:
        """Organs sorted by source label value: output label ``i + 1`` is entry ``i``."""
        return sorted(self.organs, key=lambda o: o.value)

    def nnunet_labels(self) -> dict:
        """``dataset.json`` labels: ``{"background": 0, organ: 1..N}``."""
        labels = {"background": 0}
        labels.update({o.name: i + 1 for i, o in enumerate(self.by_value())})
        return labels

    def output_label(self) -> dict:
        """Source label value -> consecutive nnU-Net label."""
        return {o.value: i + 1 for i, o in enumerate(self.by_value())}

    def source_values(self) -> dict:
        """Organ name -> label value in the source data (recorded in dataset.json)."""
        return {o.name: o.value for o in self.organs}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def organ_list_from_mapping(data: Any, *, source: str = "organ list") -> OrganList:
    """Validate an organ mapping as read from JSON/YAML.

    Parameters
    ----------
    data : mapping
        ``{"organs": {name: value or {"label": value, "patterns": [...]}}}`` or the inner mapping.
    source : str
        Where it came from, for error messages.

    Returns
    -------
    OrganList

    Raises
    ------
    MedakaError
        Listing every problem at once (bad names, values, duplicates, unknown keys).
    """
    if isinstance(data, Mapping) and "organs" in data:
        extra = sorted(set(data) - {"organs"})
        if extra:
            raise MedakaError(f"{source}: unknown top-level keys {extra}; only 'organs' is allowed")
        data = data["organs"]
    if not isinstance(data, Mapping) or not data:
        raise MedakaError(
            f"{source}: expected a mapping of organ name to label value, e.g. {{\"brain\": 1, \"heart\": 2}}, "
            f"got {type(data).__name__ if data else 'nothing'}"
        )
    problems, organs, seen_names, seen_values = [], [], {}, {}
    for name, spec in data.items():
        if not isinstance(name, str) or not name.strip():
            problems.append(f"organ name {name!r} is not a non-empty string")
            continue
        if name.lower() == "background":
            if spec not in (0, None):
                problems.append("'background' is always label 0; remove it or set it to 0")
            continue
        patterns: Any = ()
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"label", "pattern", "patterns"})
            if unknown:
                problems.append(f"organ {name!r}: unknown keys {unknown} (allowed: label, pattern, patterns)")
            value = spec.get("label")
            patterns = spec.get("patterns", spec.get("pattern", ()))
            if isinstance(patterns, str):
                patterns = (patterns,)
            if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) and p for p in patterns):
                problems.append(f"organ {name!r}: patterns must be a string or a list of strings, got {patterns!r}")
                patterns = ()
        else:
            value = spec
        if not _is_int(value) or value < 1:
            problems.append(f"organ {name!r}: label is {value!r}, expected an integer >= 1")
            continue
        if name.lower() in seen_names:
            problems.append(f"organ {name!r} is listed twice")
        if value in seen_values:
            problems.append(f"organs {seen_values[value]!r} and {name!r} share label {value}")
        seen_names[name.lower()] = name
        seen_values[value] = name
        organs.append(Organ(name=name, value=value, patterns=tuple(patterns)))
    if problems:
        raise MedakaError(f"{source}: " + "; ".join(problems))
    if not organs:
        raise MedakaError(f"{source}: lists no organs besides background")
    return OrganList(organs=tuple(organs), source=source)


def load_organ_list(path: os.PathLike | str) -> OrganList:
    """Read an organ list file (``.json``, ``.yaml`` or ``.yml``).

    Raises
    ------
    MedakaError
        If the file is missing, does not parse, or is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise MedakaError(f"{path}: cannot read the organ list ({e.strerror})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MedakaError(f"{path}: not valid JSON ({e})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise MedakaError(f"{path}: reading YAML needs PyYAML (`pip install pyyaml`), or write the list as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise MedakaError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return organ_list_from_mapping(data, source=str(path))


def find_organ_list(source: Path) -> Optional[Path]:
    """``organs.json``/``organs.yaml``/``organs.yml`` in a source folder, if there is exactly one."""
    found = [source / n for n in ORGAN_FILE_NAMES if (source / n).is_file()]
    if len(found) > 1:
        raise MedakaError(f"{source}: has {', '.join(p.name for p in found)}; keep one organ list or pass --organs")
    return found[0] if found else None


def parse_label_assignments(text: str) -> OrganList:
    """Organ list from ``"anterior=1,posterior=2"`` (the ``--labels`` option)."""
    mapping: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            mapping[name.strip()] = int(value)
        except ValueError:
            raise MedakaError(f"--labels {text!r}: {item!r} is not NAME=INTEGER, e.g. --labels anterior=1,posterior=2") from None
        if not sep:
            raise MedakaError(f"--labels {text!r}: {item!r} is not NAME=INTEGER")
    return organ_list_from_mapping(mapping, source="--labels")
