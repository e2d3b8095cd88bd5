"""``KDTrainer``: nnU-Net training plus pixel-wise distillation from a frozen nnU-Net teacher.

Run it with the stock command, ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr KDTrainer [-p PLANS]``, after
``eval "$(nnunet-medaka env)"``. Settings come from the dataset's ``nnunet_medaka.json`` (keys ``teacher``,
``teacher_folds``, ``teacher_checkpoint``, ``kd_temperature``, ``kd_weight``, ``kd_scope``, ``kd_scales`` plus the
schedule keys of `SupervisedTrainer`).

Loss per training step: nnU-Net's own supervised loss (Dice + CE, deep supervision, ignore label) plus
``kd_weight · Σ_i w_i · T² · KL(softmax(teacher/T) ‖ softmax(student_i/T))`` with nnU-Net's scale weights w_i
(`nnunet_medaka.training.kd_loss`). The teacher runs on the same augmented batch; it is loaded once in ``initialize()``
(also on ``--c``/``--val``), frozen, and never saved in the student's checkpoints. The network architecture is
nnU-Net's, so ``nnUNetv2_predict -tr KDTrainer`` needs no teacher.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.logging.nnunet_logger import LocalLogger
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.collate_outputs import collate_outputs

from nnunet_medaka.conversion.raw_dataset import PSEUDO_CASES_KEY
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.training.kd_loss import SupervisedPlusKDLoss, kd_weight_at, teacher_probabilities
from nnunet_medaka.training.supervised_trainer import SupervisedTrainer
from nnunet_medaka.training.teacher import LoadedTeacher, TeacherRuntime, default_runtime, dry_run, load_teacher

__all__ = ["KDTrainer", "PSEUDO_CASES_KEY", "pseudo_case_ids", "sample_weights_for_keys", "verify_pseudo_cases"]

# Per-epoch log keys: the two loss terms, the gradient norm of each term (before kd_weight and before nnU-Net's
# clipping of the total at 12, measured every GRAD_NORM_EVERY steps) and the KD weight in effect (kd_warmup).
LOSS_TERMS_PNG = "progress_loss_terms.png"  # the loss-terms panel during training (see LossTermsLogger)
LOSS_TERM_KEYS = ("train_loss_supervised", "train_loss_kd", "train_grad_norm_supervised", "train_grad_norm_kd",
                  "kd_weight")
# (train_step output, log key) pairs averaged over the epoch's finite values
_EPOCH_MEANS = (("loss_supervised", "train_loss_supervised"), ("loss_kd", "train_loss_kd"),
                ("grad_norm_supervised", "train_grad_norm_supervised"), ("grad_norm_kd", "train_grad_norm_kd"))


def pseudo_case_ids(dataset_json: dict, *, source: str = "dataset.json") -> frozenset:
    """The pseudo-labelled case ids the student dataset lists under ``PSEUDO_CASES_KEY``.

    Raises
    ------
    MedakaError
        If the key is missing or not a non-empty list of strings.
    """
    ids = dataset_json.get(PSEUDO_CASES_KEY)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise MedakaError(f"{source}: kd_scope is 'pseudo', so key {PSEUDO_CASES_KEY!r} must list the pseudo-labelled "
                          f"case ids (a non-empty list of strings), found {ids!r}; add it to the student dataset.json "
                          "(and its copy in nnUNet_preprocessed) or set kd_scope=all")
    return frozenset(ids)


def verify_pseudo_cases(pseudo_ids: frozenset, preprocessed_folder) -> None:
    """Check that every listed pseudo-labelled case exists among the preprocessed training cases.

    Raises
    ------
    MedakaError
        Naming the unknown ids; a typo would otherwise silently switch KD off for those cases.
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = str(preprocessed_folder)
    missing = sorted(set(pseudo_ids) - set(infer_dataset_class(folder).get_identifiers(folder)))
    if missing:
        raise MedakaError(f"dataset.json {PSEUDO_CASES_KEY!r} lists {len(missing)} case(s) not in {folder} (e.g. "
                          f"{', '.join(missing[:5])}); list preprocessed case ids only, then re-copy dataset.json into "
                          "nnUNet_preprocessed")


def sample_weights_for_keys(keys, pseudo_ids: Optional[frozenset], device: torch.device) -> Optional[torch.Tensor]:
    """Per-sample KD weights for a batch: None (all samples) or 1 for pseudo-labelled cases, 0 for the others."""
    if pseudo_ids is None:
        return None
    return torch.tensor([1.0 if str(k) in pseudo_ids else 0.0 for k in keys], device=device)


class LossTermsLogger(LocalLogger):
    """nnU-Net's local logger plus the supervised and KD training terms: drawn each epoch to ``progress_loss_terms.png``
    and, when training ends, below the stock panels of ``progress.png``."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        for key in LOSS_TERM_KEYS:
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict):
        super().load_checkpoint(checkpoint)
        n = len(self.my_fantastic_logging.get("train_losses", []))
        for key in LOSS_TERM_KEYS:  # a checkpoint from before these keys existed
            self.my_fantastic_logging.setdefault(key, [float("nan")] * n)

    def plot_progress_png(self, output_folder):
        # every epoch: nnU-Net's progress.png and a small loss-terms plot beside it; appending the panel to the
        # (3000 x 5400 px) progress.png re-reads and re-encodes it, seconds per epoch, so that happens once, at
        # the end of training (`compose_progress_png`)
        super().plot_progress_png(output_folder)
        fig = self._loss_terms_figure(width_in=12, height_in=5)
        fig.savefig(os.path.join(output_folder, LOSS_TERMS_PNG), dpi=80)
        import matplotlib.pyplot as plt

        plt.close(fig)

    def _loss_terms_figure(self, width_in: float, height_in: float):
        import matplotlib.pyplot as plt  # nnU-Net's logger module already chose the agg backend

        log = self.my_fantastic_logging
        n = min(len(v) for v in log.values())
        fig, ax = plt.subplots(1, 1, figsize=(width_in, height_in), dpi=100)
        x = list(range(n))
        ax.plot(x, log["train_losses"][:n], color="b", ls="-", label="loss_tr (total)", linewidth=4)
        ax.plot(x, log["train_loss_supervised"][:n], color="c", ls="--", label="loss_tr supervised", linewidth=4)
        ax.plot(x, log["train_loss_kd"][:n], color="m", ls="-", label="loss_tr KD (before kd_weight)", linewidth=4)
        ax.plot(x, log["val_losses"][:n], color="r", ls="-", label="loss_val (supervised)", linewidth=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss terms")
        ax.legend(loc=(0, 1), ncol=4)
        fig.tight_layout()
        return fig

    def compose_progress_png(self, output_folder) -> None:
        """Append the loss-terms panel below nnU-Net's three panels in ``progress.png``."""
        import matplotlib.pyplot as plt

        path = os.path.join(output_folder, "progress.png")
        if not os.path.isfile(path):
            return
        stock = plt.imread(path)
        width_px = stock.shape[1]
        fig = self._loss_terms_figure(width_in=width_px / 100, height_in=14)
        fig.canvas.draw()
        panel = np.asarray(fig.canvas.buffer_rgba(), dtype=np.float32) / 255.0
        plt.close(fig)
        if stock.shape[2] == 3:
            stock = np.concatenate([stock, np.ones(stock.shape[:2] + (1,), stock.dtype)], axis=2)
        panel = panel[:, :width_px]
        if panel.shape[1] < width_px:
            panel = np.pad(panel, ((0, 0), (0, width_px - panel.shape[1]), (0, 0)), constant_values=1.0)
        plt.imsave(path, np.clip(np.concatenate([stock, panel], axis=0), 0, 1))


class KDTrainer(SupervisedTrainer):
    """Student trainer: supervised nnU-Net loss plus KD against a frozen teacher named in ``nnunet_medaka.json``.

    Attributes
    ----------
    teacher : LoadedTeacher or None
        Set in ``initialize()``.
    teacher_runtime : TeacherRuntime or None
        Teacher precision/memory format/compile/autocast; None (default) picks `default_runtime`. Set it before
        ``initialize()`` to override (the benchmark does).
    """

    # Gradient norms of both loss terms cost two extra backward passes; measured on every this many training steps
    # (the first step of each epoch included), NaN on the others and left out of the epoch mean.
    grad_norm_every: int = 10

    # nnU-Net fills my_init_kwargs from this exact signature: no extra parameters allowed.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._epoch_step = 0
        self.teacher: Optional[LoadedTeacher] = None
        self.teacher_runtime: Optional[TeacherRuntime] = None
        self.pseudo_ids: Optional[frozenset] = None
        self.logger.local_logger = LossTermsLogger(self.logger.local_logger.verbose)

    # -- setup ---------------------------------------------------------------------------------------------------
    def _build_loss(self):
        # nnU-Net builds the loss once, inside initialize(), after the student network and before SupervisedTrainer
        # records the run settings; the KD loss needs the teacher, so the teacher is checked and loaded here.
        supervised = super()._build_loss()
        config = self.medaka_config
        if self.label_manager.has_regions:
            raise MedakaError(f"{self.preprocessed_dataset_folder_base}/dataset.json defines regions (sigmoid outputs); "
                              "KDTrainer distils softmax class probabilities only. Use label-based training")
        if not config.teacher:
            where = self.medaka_config_path or os.path.join(self.preprocessed_dataset_folder_base, "nnunet_medaka.json")
            raise MedakaError(f"{where}: config key 'teacher' is not set; KDTrainer needs a trained nnU-Net model folder. "
                              f"Set it with `nnunet-medaka config -d {self.plans_manager.dataset_name} --set "
                              "teacher=nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration`")
        if config.kd_scope == "pseudo":
            self.pseudo_ids = pseudo_case_ids(self.dataset_json, source=os.path.join(
                str(self.preprocessed_dataset_folder_base), "dataset.json"))
        runtime = self.teacher_runtime or default_runtime(self.device, compile_student=self._do_i_compile())
        self.teacher = load_teacher(
            config.teacher, config.teacher_folds, config.teacher_checkpoint, device=self.device,
            student_plans=self.plans_manager.plans, student_configuration=self.configuration_name,
            student_dataset_json=self.dataset_json, runtime=runtime, hash_files=self.local_rank == 0)
        dry_run(self.teacher, num_input_channels=self.num_input_channels, batch_size=self.batch_size,
                patch_size=self.configuration_manager.patch_size,
                num_classes=self.label_manager.num_segmentation_heads, device=self.device)
        self.print_to_log_file(f"KD teacher: {self.teacher.trainer_name} / {self.teacher.configuration}, folds "
                               f"{sorted(self.teacher.files.checkpoints)} from {self.teacher.files.folder} "
                               f"({runtime})", also_print_to_console=True)
        if isinstance(supervised, DeepSupervisionWrapper):
            scale_weights = list(supervised.weight_factors)
            if config.kd_scales == "full":
                scale_weights = [1.0] + [0.0] * (len(scale_weights) - 1)
        else:
            scale_weights = None  # one output: full resolution
        return SupervisedPlusKDLoss(supervised, kd_weight=config.kd_weight, temperature=config.kd_temperature,
                                    scale_weights=scale_weights)

    @property
    def kd_loss(self) -> SupervisedPlusKDLoss:
        return getattr(self.loss, "_orig_mod", self.loss)

    def current_kd_weight(self) -> float:
        """``kd_weight`` ramped over the first ``kd_warmup`` epochs (`kd_weight_at`)."""
        return kd_weight_at(self.current_epoch, self.medaka_config.kd_weight, self.medaka_config.kd_warmup)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._epoch_step = 0
        self.kd_loss.kd_weight = self.current_kd_weight()
        self.logger.log("kd_weight", self.kd_loss.kd_weight, self.current_epoch)

    def on_train_start(self):
        super().on_train_start()
        if self.pseudo_ids is not None:
            verify_pseudo_cases(self.pseudo_ids, self.preprocessed_dataset_folder)

    def on_train_end(self):
        if self.local_rank == 0:
            self.logger.local_logger.compose_progress_png(self.output_folder)
        super().on_train_end()

    def run_settings(self) -> dict:
        settings = super().run_settings()
        if self.teacher is not None:
            settings["teacher"] = self.teacher.describe()
        settings["kd"] = {"loss": "supervised + kd_weight * sum_i w_i * T^2 * KL(teacher_T || student_T), KL summed "
                                  "over classes, mean over voxels; teacher probabilities average-pooled to each DS scale",
                          "scale_weights": getattr(self.loss, "scale_weights", None),
                          "pseudo_cases": len(self.pseudo_ids) if self.pseudo_ids is not None else None}
        return settings

    # -- training ------------------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        weights = sample_weights_for_keys(batch.get("keys", ()), self.pseudo_ids, self.device)
        if weights is not None and not bool(weights.any()):
            self.loss.set_teacher(None)  # no pseudo-labelled sample in this batch: no teacher pass needed
        else:
            with torch.no_grad():
                probs = teacher_probabilities(self.teacher.ensemble(data), self.medaka_config.kd_temperature)
            self.loss.set_teacher(probs, weights)
        measure = self.grad_norm_every > 0 and self._epoch_step % self.grad_norm_every == 0
        self._epoch_step += 1
        if measure:
            params = [p for p in self.network.parameters() if p.requires_grad]
            scale = float(self.grad_scaler.get_scale()) if self.grad_scaler is not None else 1.0
            self.kd_loss.measure_grad_norms = (params, scale)
        result = super().train_step({**batch, "data": data})
        norms = self.kd_loss.last_grad_norms if measure else None
        result["grad_norm_supervised"] = np.float64(norms["supervised"]) if norms else np.float64("nan")
        result["grad_norm_kd"] = np.float64(norms["kd"]) if norms else np.float64("nan")
        terms = self.loss.last_terms
        kd = terms["kd"]
        kd = kd.float() if torch.is_tensor(kd) else torch.tensor(float("nan"), device=terms["supervised"].device)
        both = torch.stack([terms["supervised"].float(), kd]).cpu().numpy()
        result["loss_supervised"], result["loss_kd"] = both[0], both[1]
        return result

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for key, log_key in _EPOCH_MEANS:
            values = np.asarray(outputs[key], dtype=np.float64).ravel()
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, values)
                values = np.concatenate(gathered)
            finite = values[np.isfinite(values)]
            self.logger.log(log_key, float(finite.mean()) if finite.size else float("nan"), self.current_epoch)

    def on_epoch_end(self):
        self.print_to_log_file("train_loss_supervised",
                               np.round(self.logger.get_value("train_loss_supervised", step=-1), decimals=4))
        self.print_to_log_file(f"train_loss_kd (x kd_weight {self.kd_loss.kd_weight:g})",
                               np.round(self.logger.get_value("train_loss_kd", step=-1), decimals=4))
        self.print_to_log_file("grad norm (before clipping) supervised / KD (before kd_weight)",
                               np.round(self.logger.get_value("train_grad_norm_supervised", step=-1), decimals=4),
                               np.round(self.logger.get_value("train_grad_norm_kd", step=-1), decimals=4))
        super().on_epoch_end()
