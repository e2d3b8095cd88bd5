"""The KD teacher: load a trained nnU-Net model folder frozen, after ``teacher_files`` has checked it.

A teacher is any ``nnUNet_results/DatasetXXX/Trainer__Plans__configuration`` folder, one fold or several folds
(averaged as an ensemble). Compatibility with the student is checked on the plans and dataset.json before any
weights are loaded: same labels, same input channels, identical preprocessing (so the teacher sees exactly the
arrays it was trained on) and a student patch size the teacher network can process. Every problem is reported at
once in one `MedakaError` that names the field, both values and the fix.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.training.teacher_files import TeacherFiles, locate_teacher, sha256_file, verify_compatibility

__all__ = ["LoadedTeacher", "TeacherEnsemble", "TeacherRuntime", "default_runtime", "dry_run", "load_teacher"]


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


def _loaded_trainer_class(trainer_name: str):
    """An already imported ``nnUNetTrainer`` subclass of that name (nnU-Net's own or a plugin's), or None."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pending, seen = [nnUNetTrainer], set()
    while pending:
        cls = pending.pop()
        if cls.__name__ == trainer_name:
            return cls
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                pending.append(sub)
    return None


def _trainer_class(trainer_name: str):
    """The class whose static ``build_network_architecture`` rebuilds the teacher, as nnU-Net's predictor finds it.

    A class already imported (nnU-Net's ``nnUNetTrainer``; the plugin's trainers once the student trainer runs) is
    taken directly; anything else goes through nnU-Net's search (built-in tree, then ``nnUNet_extTrainer``), several
    seconds. The teacher side thus never imports the student's trainer module.
    """
    found = _loaded_trainer_class(trainer_name)
    if found is not None:
        return found
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_medaka.environment import nnunet_lookup

    try:
        with nnunet_lookup():
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
