"""The KD teacher: find a trained nnU-Net model folder, refuse incompatible ones, load it frozen.

A teacher is any ``nnUNet_results/DatasetXXX/Trainer__Plans__configuration`` folder, one fold or several folds
(averaged as an ensemble). Compatibility with the student is checked on the plans and dataset.json before any
weights are loaded: same labels, same input channels, identical preprocessing (so the teacher sees exactly the
arrays it was trained on) and a student patch size the teacher network can process. Every problem is reported at
once in one `MedakaError` that names the field, both values and the fix.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from nnunet_medaka.errors import MedakaError

__all__ = [
    "LoadedTeacher",
    "TeacherEnsemble",
    "TeacherFiles",
    "TeacherRuntime",
    "check_input_channels",
    "check_labels",
    "check_patch_size",
    "check_preprocessing",
    "default_runtime",
    "load_teacher",
    "locate_teacher",
    "sha256_file",
    "verify_compatibility",
]

MOVE_PLANS_FIX = ("derive the student's plans from the teacher's, e.g. `nnUNetv2_move_plans_between_datasets -s TEACHER_ID "
                  "-t STUDENT_ID -sp TEACHER_PLANS -tp STUDENT_PLANS`, then `nnUNetv2_preprocess` the student with them")
# Normalization schemes that do not read the plans' foreground intensity properties; for any other scheme
# (CTNormalization, custom ones) the properties are part of the preprocessing and must match.
_SCHEMES_WITHOUT_INTENSITY_PROPERTIES = frozenset(
    {"ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization", "RGBTo01Normalization"})


@dataclass(frozen=True)
class TeacherRuntime:
    """How the frozen teacher runs: weight precision, memory format, compilation, autocast."""

    precision: str = "fp32"  # dtype the teacher weights are held in: fp32, fp16 or bf16
    channels_last: bool = False  # channels_last(_3d) memory format for weights and input
    compile: bool = False  # torch.compile each teacher network
    autocast: bool = False  # run the forward pass under torch.autocast (CUDA only)

    def dtype(self) -> torch.dtype:
        try:
            return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        except KeyError:
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}") from None


def default_runtime(device: torch.device, compile_student: bool) -> TeacherRuntime:
    """The teacher settings KDTrainer uses unless told otherwise.

    CPU: fp32, eager, no autocast (nnU-Net trains the student in fp32 there too). CUDA: autocast with the weights
    held in fp16 (the autocast copies of frozen weights are not cached, so fp32 weights would be cast on every
    step); when nnU-Net compiles the student, the teacher is compiled too and kept channels-last, the fastest
    combination in the issue's H100 reference figures (channels-last without compile was slower there).
    """
    if device.type != "cuda":
        return TeacherRuntime()
    return TeacherRuntime(precision="fp16", channels_last=compile_student, compile=compile_student, autocast=True)


@dataclass(frozen=True)
class TeacherFiles:
    """What was found in a teacher model folder."""

    folder: Path
    plans: dict
    dataset_json: dict
    checkpoints: dict  # fold -> checkpoint path


def locate_teacher(folder, folds: Sequence[int], checkpoint_name: str) -> TeacherFiles:
    """Find a teacher's plans, dataset.json and one checkpoint per requested fold.

    Parameters
    ----------
    folder : path
        The model folder, ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``.
    folds : sequence of int
        Folds to use (their checkpoints are averaged as an ensemble).
    checkpoint_name : str
        File name inside each ``fold_X`` folder, e.g. ``checkpoint_final.pth``.

    Returns
    -------
    TeacherFiles

    Raises
    ------
    MedakaError
        Naming every missing folder or file, what exists instead, and the config key to change.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MedakaError(f"config key 'teacher' is {str(folder)!r}: no such folder. Set it to a trained nnU-Net model "
                          "folder (nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration) with "
                          "`nnunet-medaka config -d DATASET --set teacher=PATH`")
    folder = folder.resolve()
    problems = []
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name} is missing (the folder does not look like a trained nnU-Net model folder)")
    available = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
    checkpoints = {}
    for fold in folds:
        path = folder / f"fold_{fold}" / checkpoint_name
        if not path.parent.is_dir():
            problems.append(f"teacher_folds includes {fold}, but {path.parent} does not exist "
                            f"(available: {', '.join(available) or 'none'}); train that fold or change teacher_folds")
        elif not path.is_file():
            present = sorted(p.name for p in path.parent.glob("*.pth"))
            problems.append(f"teacher_checkpoint is {checkpoint_name!r}, but {path} does not exist (fold_{fold} has: "
                            f"{', '.join(present) or 'no checkpoints'}); finish that training or change teacher_checkpoint")
        else:
            checkpoints[fold] = path
    if problems:
        raise MedakaError("teacher: " + "; ".join(problems))
    plans = _read_json(folder / "plans.json")
    dataset_json = _read_json(folder / "dataset.json")
    return TeacherFiles(folder, plans, dataset_json, checkpoints)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MedakaError(f"{path}: cannot be read as JSON ({e})") from None


def _labels_without_ignore(dataset_json: dict) -> dict:
    return {k: v for k, v in dataset_json.get("labels", {}).items() if k != "ignore"}


def check_labels(teacher_dataset_json: dict, student_dataset_json: dict) -> list:
    """Problems if the teacher predicts other classes than the student's (an ``ignore`` label may differ).

    Returns
    -------
    list of str
        Empty when compatible.
    """
    t, s = _labels_without_ignore(teacher_dataset_json), _labels_without_ignore(student_dataset_json)
    problems = []
    if t != s:
        problems.append(f"dataset.json 'labels' differ: teacher {json.dumps(t)}, student {json.dumps(s)}; the teacher "
                        "must predict exactly the student's classes (same names and values). Relabel the student "
                        "dataset or pick a teacher trained on these labels")
    t_order, s_order = teacher_dataset_json.get("regions_class_order"), student_dataset_json.get("regions_class_order")
    if t_order != s_order:
        problems.append(f"dataset.json 'regions_class_order' differs: teacher {t_order}, student {s_order}")
    return problems


def check_input_channels(teacher_plans: dict, teacher_configuration: str, teacher_dataset_json: dict,
                         student_plans: dict, student_configuration: str, student_dataset_json: dict) -> list:
    """Problems if the teacher network takes a different number of input channels than the student gets."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    t_pm, s_pm = PlansManager(teacher_plans), PlansManager(student_plans)
    t = determine_num_input_channels(t_pm, t_pm.get_configuration(teacher_configuration), teacher_dataset_json)
    s = determine_num_input_channels(s_pm, s_pm.get_configuration(student_configuration), student_dataset_json)
    if t != s:
        return [f"input channels differ: teacher configuration {teacher_configuration!r} takes {t} "
                f"(channel_names {json.dumps(teacher_dataset_json.get('channel_names'))}), the student gets {s} "
                f"(channel_names {json.dumps(student_dataset_json.get('channel_names'))}); use a teacher trained on the "
                "same image channels (cascade stages also take the previous stage's segmentation)"]
    return []


def _close(a, b, rel: float = 1e-6) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return a == b


def check_preprocessing(teacher_plans: dict, teacher_configuration: str,
                        student_plans: dict, student_configuration: str) -> list:
    """Problems if the student's arrays are preprocessed differently from the teacher's training data.

    Compared: ``transpose_forward``, ``image_reader_writer``, and per configuration ``spacing``,
    ``normalization_schemes``, ``use_mask_for_norm``, ``resampling_fn_data`` (+ kwargs), ``preprocessor_name``,
    and the foreground intensity properties of every channel whose normalization reads them (e.g. CT).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    t_cfg = PlansManager(teacher_plans).get_configuration(teacher_configuration).configuration
    s_cfg = PlansManager(student_plans).get_configuration(student_configuration).configuration
    fields = [(f"plans '{k}'", teacher_plans.get(k), student_plans.get(k)) for k in ("transpose_forward", "image_reader_writer")]
    fields += [(f"configuration '{k}'", t_cfg.get(k), s_cfg.get(k)) for k in (
        "spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data", "resampling_fn_data_kwargs",
        "preprocessor_name")]
    schemes = t_cfg.get("normalization_schemes") or []
    t_int = teacher_plans.get("foreground_intensity_properties_per_channel", {})
    s_int = student_plans.get("foreground_intensity_properties_per_channel", {})
    for channel, scheme in enumerate(schemes):
        if scheme not in _SCHEMES_WITHOUT_INTENSITY_PROPERTIES:
            key = str(channel)
            fields.append((f"plans 'foreground_intensity_properties_per_channel'[{key}] (used by {scheme})",
                           t_int.get(key), s_int.get(key)))
    differing = [f"{name}: teacher {json.dumps(t)}, student {json.dumps(s)}" for name, t, s in fields if not _close(t, s)]
    if not differing:
        return []
    return [f"preprocessing differs between the teacher ({teacher_plans.get('plans_name')}/{teacher_configuration}) and the "
            f"student ({student_plans.get('plans_name')}/{student_configuration}): " + "; ".join(differing)
            + f". The teacher would see differently preprocessed data. Fix: {MOVE_PLANS_FIX}"]


def check_patch_size(patch_size: Sequence[int], teacher_plans: dict, teacher_configuration: str) -> list:
    """Problems if the teacher network cannot process the student's patches (axes count, total stride)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(teacher_plans).get_configuration(teacher_configuration)
    strides = cm.pool_op_kernel_sizes
    patch = [int(p) for p in patch_size]
    if len(strides[0]) != len(patch):
        return [f"patch_size {patch} has {len(patch)} axes, the teacher network ({teacher_configuration!r}) is "
                f"{len(strides[0])}D; use a teacher of the same dimensionality"]
    total = [math.prod(int(s[axis]) for s in strides) for axis in range(len(patch))]
    if any(p % t for p, t in zip(patch, total)):
        suggestion = [max(t, round(p / t) * t) for p, t in zip(patch, total)]
        return [f"student configuration 'patch_size' {patch} is not a multiple of the teacher network's total stride "
                f"{total} per axis (teacher 'strides' {[list(s) for s in strides]}); set the student's patch_size to "
                f"multiples of it (e.g. {suggestion}) or use the teacher's plans for the student"]
    return []


def verify_compatibility(teacher: TeacherFiles, teacher_configuration: str, *, student_plans: dict,
                         student_configuration: str, student_dataset_json: dict) -> None:
    """Run every compatibility check and raise one error listing all problems.

    Raises
    ------
    MedakaError
        If labels, input channels, preprocessing or patch size do not fit.
    """
    if teacher_configuration not in teacher.plans.get("configurations", {}):
        raise MedakaError(f"teacher {teacher.folder}: its checkpoints were trained with configuration "
                          f"{teacher_configuration!r}, which {teacher.folder / 'plans.json'} does not define")
    s_patch = student_plans["configurations"][student_configuration].get("patch_size")
    if s_patch is None:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        s_patch = PlansManager(student_plans).get_configuration(student_configuration).patch_size
    problems = (check_labels(teacher.dataset_json, student_dataset_json)
                + check_input_channels(teacher.plans, teacher_configuration, teacher.dataset_json,
                                       student_plans, student_configuration, student_dataset_json)
                + check_preprocessing(teacher.plans, teacher_configuration, student_plans, student_configuration)
                + check_patch_size(s_patch, teacher.plans, teacher_configuration))
    if problems:
        raise MedakaError(f"teacher {teacher.folder} is incompatible with the student: " + " | ".join(problems))


def sha256_file(path, chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TeacherEnsemble(nn.Module):
    """Frozen teacher networks (one per fold); ``forward`` returns one logit tensor per network.

    It stays in eval mode whatever ``train()`` asks, and none of its parameters requires gradients.
    """

    def __init__(self, networks: Sequence[nn.Module], runtime: TeacherRuntime = TeacherRuntime()):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.runtime = runtime
        for p in self.parameters():
            p.requires_grad_(False)
        self._runners = list(self.networks)
        super().train(False)

    def train(self, mode: bool = True) -> "TeacherEnsemble":
        return super().train(False)

    def prepare(self, device: torch.device) -> "TeacherEnsemble":
        """Move to ``device`` and apply the runtime's precision, memory format and compilation."""
        self.to(device=device, dtype=self.runtime.dtype())
        if self.runtime.channels_last:
            fmt = torch.channels_last_3d if self._spatial_dims() == 3 else torch.channels_last
            self.to(memory_format=fmt)
        self._runners = [torch.compile(n) if self.runtime.compile else n for n in self.networks]
        return self

    def _spatial_dims(self) -> int:
        conv = next(m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        return 3 if isinstance(conv, nn.Conv3d) else 2

    def forward(self, x: torch.Tensor) -> list:
        x = x.to(dtype=self.runtime.dtype())
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last)
        use_autocast = self.runtime.autocast and x.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=use_autocast):
            return [run(x) for run in self._runners]


@dataclass
class LoadedTeacher:
    """A frozen teacher and where it came from (recorded in the student's run settings)."""

    files: TeacherFiles
    trainer_name: str
    configuration: str
    ensemble: TeacherEnsemble
    sha256: dict = field(default_factory=dict)  # checkpoint path -> hex digest

    def describe(self) -> dict:
        return {
            "folder": str(self.files.folder),
            "trainer": self.trainer_name,
            "plans": self.files.plans.get("plans_name"),
            "configuration": self.configuration,
            "folds": sorted(self.files.checkpoints),
            "checkpoints": [{"fold": f, "path": str(p), "sha256": self.sha256.get(str(p))}
                            for f, p in sorted(self.files.checkpoints.items())],
            "runtime": {"precision": self.ensemble.runtime.precision, "channels_last": self.ensemble.runtime.channels_last,
                        "compile": self.ensemble.runtime.compile, "autocast": self.ensemble.runtime.autocast},
        }


def _read_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which one
        raise MedakaError(f"teacher checkpoint {path} cannot be loaded ({type(e).__name__}: {e}); "
                          "re-run or finish the teacher training, or pick another teacher_checkpoint") from None
    missing = [k for k in ("network_weights", "trainer_name", "init_args") if k not in checkpoint]
    if missing:
        raise MedakaError(f"teacher checkpoint {path} lacks {', '.join(missing)}: not an nnU-Net v2 checkpoint")
    return checkpoint


def _trainer_class(trainer_name: str):
    """The class whose static ``build_network_architecture`` rebuilds the teacher, as nnU-Net's predictor finds it.

    nnU-Net's own ``nnUNetTrainer`` and this plugin's trainers (which keep its architecture) are resolved directly;
    anything else goes through nnU-Net's search (built-in tree, then ``nnUNet_extTrainer``), several seconds.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if trainer_name == "nnUNetTrainer":
        return nnUNetTrainer
    if trainer_name == "SupervisedTrainer":
        from nnunet_medaka.supervised_trainer import SupervisedTrainer
        return SupervisedTrainer
    if trainer_name == "KDTrainer":
        from nnunet_medaka.kd_trainer import KDTrainer
        return KDTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(trainer_name)
    except RuntimeError as e:
        raise MedakaError(f"teacher trainer class {trainer_name!r} (named in its checkpoint) cannot be found: {e}") from None


def _build_network(trainer_name: str, plans: dict, configuration: str, dataset_json: dict) -> nn.Module:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    trainer_class = _trainer_class(trainer_name)
    pm = PlansManager(copy.deepcopy(plans))
    cm = pm.get_configuration(configuration)
    return trainer_class.build_network_architecture(
        pm, cm, determine_num_input_channels(pm, cm, dataset_json),
        pm.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)


def load_teacher(folder, folds: Sequence[int], checkpoint_name: str, *, device: torch.device, student_plans: dict,
                 student_configuration: str, student_dataset_json: dict,
                 runtime: Optional[TeacherRuntime] = None, hash_files: bool = True) -> LoadedTeacher:
    """Locate, check, load and freeze a teacher for a student; fails before training if anything is off.

    Parameters
    ----------
    folder : path
        Teacher model folder.
    folds : sequence of int
        Folds to average.
    checkpoint_name : str
        Checkpoint file name in each fold folder.
    device : torch.device
        Where the teacher runs (the student's device; in DDP each rank loads its own copy).
    student_plans, student_configuration, student_dataset_json
        The student's plans dict, configuration name and dataset.json.
    runtime : TeacherRuntime, optional
        Precision/memory format/compile/autocast; default `default_runtime` for ``device`` without compile.
    hash_files : bool
        Compute the checkpoints' SHA-256 (only one DDP rank needs to).

    Returns
    -------
    LoadedTeacher

    Raises
    ------
    MedakaError
        Missing folder/fold/checkpoint, incompatible labels/channels/preprocessing/patch size, unloadable
        checkpoint, or a teacher that fails on a student-sized patch.
    """
    runtime = runtime or default_runtime(device, compile_student=False)
    files = locate_teacher(folder, folds, checkpoint_name)
    checkpoints = {fold: _read_checkpoint(path) for fold, path in files.checkpoints.items()}
    first_fold = min(checkpoints)
    trainer_name = checkpoints[first_fold]["trainer_name"]
    configuration = checkpoints[first_fold]["init_args"].get("configuration")
    for fold, ckpt in checkpoints.items():
        if (ckpt["trainer_name"], ckpt["init_args"].get("configuration")) != (trainer_name, configuration):
            raise MedakaError(f"teacher_folds mix models: fold {fold} was trained by {ckpt['trainer_name']} / "
                              f"{ckpt['init_args'].get('configuration')}, fold {first_fold} by {trainer_name} / "
                              f"{configuration}; use folds of one model folder")
    verify_compatibility(files, configuration, student_plans=student_plans, student_configuration=student_configuration,
                         student_dataset_json=student_dataset_json)
    networks = []
    for fold, ckpt in sorted(checkpoints.items()):
        net = _build_network(trainer_name, files.plans, configuration, files.dataset_json)
        try:
            net.load_state_dict(ckpt["network_weights"])
        except RuntimeError as e:
            raise MedakaError(f"teacher checkpoint {files.checkpoints[fold]} does not fit the network its plans describe "
                              f"({str(e).splitlines()[0]}); the model folder's plans.json and checkpoints disagree") from None
        networks.append(net)
    del checkpoints
    ensemble = TeacherEnsemble(networks, runtime).prepare(device)
    sha = {str(p): sha256_file(p) for p in files.checkpoints.values()} if hash_files else {}
    return LoadedTeacher(files, trainer_name, configuration, ensemble, sha)


def dry_run(teacher: LoadedTeacher, *, num_input_channels: int, patch_size: Sequence[int], num_classes: int,
            device: torch.device, batch_size: int = 1) -> None:
    """Run the teacher once on a zero batch of the student's patch size and check its output shape.

    With the training batch size, a compiled teacher is also compiled here for exactly the shapes it will see
    (a later, different batch size would make torch.compile recompile with dynamic shapes).

    Raises
    ------
    MedakaError
        If the forward pass fails or returns an unexpected shape.
    """
    x = torch.zeros((batch_size, num_input_channels, *patch_size), device=device)
    expected = (batch_size, num_classes, *[int(p) for p in patch_size])
    try:
        outputs = teacher.ensemble(x)
    except RuntimeError as e:
        raise MedakaError(f"teacher {teacher.files.folder} fails on a student patch of size {list(patch_size)} "
                          f"({str(e).splitlines()[0]}); check the student's patch_size against the teacher network") from None
    for out in outputs:
        if tuple(out.shape) != expected:
            raise MedakaError(f"teacher {teacher.files.folder} returns shape {tuple(out.shape)} for a student patch, "
                              f"expected {expected}; the teacher must output full-resolution logits for the same classes")
