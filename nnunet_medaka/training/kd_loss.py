"""Pixel-wise knowledge distillation (KD) term, as plain torch functions plus a deep-supervision-aware loss.

The KD term for one output is

    T² · mean over voxels [ Σ_c p_t,c · (log p_t,c − log p_s,c) ],   p_t = softmax(teacher / T), p_s = softmax(student / T)

that is KL(p_t ‖ p_s) **summed over classes** and averaged over voxels (``F.kl_div(reduction="mean")`` would
average over classes too and silently divide the term by the class count). The factor T² keeps the gradient
size independent of T (Hinton et al., 2015).

Deep supervision: nnU-Net's network returns logits at several scales ``[full, 1/2, 1/4, ...]``. The KD term is
applied at each scale with nnU-Net's own scale weights, against the teacher's full-resolution probabilities
average-pooled to that scale (pooled probabilities are still distributions and need no teacher heads, so any
teacher architecture works). Scales whose weight is 0 are skipped.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SupervisedPlusKDLoss",
    "deep_supervision_kd",
    "gradient_norm",
    "kd_weight_at",
    "kd_divergence",
    "pool_probabilities",
    "teacher_probabilities",
]


def teacher_probabilities(logits_per_model: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Tempered class probabilities of one teacher or the mean of several (an ensemble).

    Parameters
    ----------
    logits_per_model : sequence of torch.Tensor
        One ``(B, C, *spatial)`` logit tensor per teacher model (e.g. per fold); any float dtype.
    temperature : float
        Softmax temperature T > 0.

    Returns
    -------
    torch.Tensor
        float32 ``(B, C, *spatial)``: the mean over models of ``softmax(logits / T)`` along the class axis.
        Averaging probabilities (not logits) makes the ensemble target a proper mixture distribution.

    Raises
    ------
    ValueError
        If no logits are given or T is not positive.
    """
    if not logits_per_model:
        raise ValueError("teacher_probabilities needs at least one logit tensor")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    total = None
    for logits in logits_per_model:
        p = torch.softmax(logits.float() / temperature, dim=1)
        total = p if total is None else total.add_(p)
    if len(logits_per_model) > 1:
        total.div_(len(logits_per_model))
    return total


def pool_probabilities(probabilities: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Average-pool class probabilities to a coarser grid whose size divides the input's.

    Parameters
    ----------
    probabilities : torch.Tensor
        ``(B, C, *spatial)`` with 2 or 3 spatial axes.
    shape : sequence of int
        Target spatial shape; every input axis must be an integer multiple of it.

    Returns
    -------
    torch.Tensor
        ``(B, C, *shape)``; each output voxel is the mean of the input block it covers, so it still sums to 1
        over classes.

    Raises
    ------
    ValueError
        If the shapes do not divide, or the tensor is not 2D/3D.
    """
    spatial = tuple(probabilities.shape[2:])
    shape = tuple(int(s) for s in shape)
    if spatial == shape:
        return probabilities
    if len(spatial) != len(shape) or any(s % t for s, t in zip(spatial, shape)):
        raise ValueError(f"cannot pool spatial shape {spatial} to {shape}: each axis must divide")
    factors = tuple(s // t for s, t in zip(spatial, shape))
    if len(spatial) == 3:
        return F.avg_pool3d(probabilities, kernel_size=factors, stride=factors)
    if len(spatial) == 2:
        return F.avg_pool2d(probabilities, kernel_size=factors, stride=factors)
    raise ValueError(f"expected 2 or 3 spatial axes, got {len(spatial)}")


def kd_divergence(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float, *,
                  weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """T² · KL(teacher ‖ student), summed over classes and averaged over all voxels of the batch.

    Parameters
    ----------
    student_logits : torch.Tensor
        ``(B, C, *spatial)`` raw student outputs (any float dtype; computed in float32).
    teacher_probs : torch.Tensor
        ``(B, C, *spatial)`` tempered teacher probabilities (see `teacher_probabilities`); treated as constants.
    temperature : float
        Softmax temperature T > 0, the same T used for ``teacher_probs``.
    weights : torch.Tensor, optional
        Per-voxel or per-sample weights broadcastable to ``(B, 1, *spatial)``, e.g. ``(B, 1, 1, 1, 1)`` with 0 for
        samples that get no KD. The mean still divides by *all* voxels, so a zero weight removes a voxel's term
        without making the others count more.

    Returns
    -------
    torch.Tensor
        A float32 scalar, ≥ 0 (up to rounding), 0 where student and teacher agree.

    Raises
    ------
    ValueError
        If the shapes differ or T is not positive.

    Examples
    --------
    >>> s = torch.randn(2, 3, 4, 4, 4)
    >>> float(kd_divergence(s, torch.softmax(s, 1), 1.0)) < 1e-6
    True
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probs.shape)} shapes differ")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_student = torch.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_probs = teacher_probs.detach().float()
    # kl_div(input=log q, target=p) = p · (log p − log q) elementwise, with 0 where p == 0.
    per_voxel = F.kl_div(log_p_student, teacher_probs, reduction="none").sum(dim=1, keepdim=True)
    if weights is not None:
        per_voxel = per_voxel * weights.to(per_voxel.dtype)
    return per_voxel.mean() * (temperature ** 2)


def deep_supervision_kd(student_outputs, teacher_probs: torch.Tensor, temperature: float, *,
                        scale_weights: Optional[Sequence[float]] = None,
                        weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KD term over nnU-Net's deep-supervision outputs: Σ_i w_i · kd_divergence(output_i, pooled teacher_i).

    Parameters
    ----------
    student_outputs : torch.Tensor or sequence of torch.Tensor
        Student logits, full resolution first (nnU-Net's DS order), or one tensor without deep supervision.
    teacher_probs : torch.Tensor
        Tempered teacher probabilities at full resolution; pooled to each coarser output's shape.
    temperature : float
        Softmax temperature T > 0.
    scale_weights : sequence of float, optional
        One weight per output (nnU-Net's ``DeepSupervisionWrapper.weight_factors``). Default: 1 for the first output
        and 0 for the rest (full resolution only). Outputs with weight 0 are not computed.
    weights : torch.Tensor, optional
        Per-sample weights of shape ``(B,)``, applied at every scale (see `kd_divergence`).

    Returns
    -------
    torch.Tensor
        A float32 scalar.

    Raises
    ------
    ValueError
        If the number of weights differs from the number of outputs, all weights are 0, or shapes do not fit.
    """
    outputs = list(student_outputs) if isinstance(student_outputs, (list, tuple)) else [student_outputs]
    if scale_weights is None:
        scale_weights = [1.0] + [0.0] * (len(outputs) - 1)
    if len(scale_weights) != len(outputs):
        raise ValueError(f"{len(scale_weights)} scale weights for {len(outputs)} outputs")
    if not any(w != 0 for w in scale_weights):
        raise ValueError("at least one scale weight must be non-zero")
    sample_weights = None
    if weights is not None:
        sample_weights = weights.reshape(-1, *([1] * (teacher_probs.ndim - 1))).to(teacher_probs.device)
    total = None
    target = teacher_probs
    for output, w in zip(outputs, scale_weights):
        if w == 0:
            continue
        # DS shapes nest (each scale divides the previous one), so pooling the last pooled map is exact and cheaper.
        target = pool_probabilities(target, output.shape[2:])
        term = w * kd_divergence(output, target, temperature, weights=sample_weights)
        total = term if total is None else total + term
    return total


def kd_weight_at(epoch: int, kd_weight: float, warmup_epochs: int) -> float:
    """The KD weight in ``epoch`` (0-based) under a linear warm-up (config key ``kd_warmup``).

    The weight ramps linearly from 0 in epoch 0 to ``kd_weight`` in epoch ``warmup_epochs`` and stays there;
    ``warmup_epochs = 0`` means the full weight from the start.

    Examples
    --------
    >>> [kd_weight_at(e, 2.0, 4) for e in (0, 1, 2, 4, 10)]
    [0.0, 0.5, 1.0, 2.0, 2.0]
    """
    if warmup_epochs <= 0:
        return float(kd_weight)
    return float(kd_weight) * min(1.0, max(0, epoch) / warmup_epochs)


def gradient_norm(term: torch.Tensor, params: Sequence[torch.Tensor], scale: float = 1.0) -> float:
    """L2 norm of d(term)/d(params) over all parameters, without touching ``.grad`` (the graph is retained).

    ``scale`` multiplies the term before differentiating and divides the norm after (the AMP loss scale, so that
    fp16 gradients do not underflow); parameters the term does not reach count as zero.
    """
    if not term.requires_grad:
        return 0.0
    grads = torch.autograd.grad(term * scale if scale != 1.0 else term, params, retain_graph=True, allow_unused=True)
    squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(squares).sum().sqrt()) / scale if squares else 0.0


_NO_KD = object()  # set_teacher(None): this training batch gets no KD term


class SupervisedPlusKDLoss(nn.Module):
    """nnU-Net's supervised loss plus ``kd_weight ·`` `deep_supervision_kd`, with the teacher given per step.

    nnU-Net calls ``self.loss(output, target)`` in both ``train_step`` and ``validation_step``. The trainer hands
    the teacher's probabilities for the current training batch to `set_teacher` just before; the next call adds
    the KD term and forgets them. Calls without a pending teacher (validation) return the supervised loss alone,
    so validation losses stay comparable to stock nnU-Net.

    Parameters
    ----------
    supervised : nn.Module
        nnU-Net's loss as built by ``nnUNetTrainer._build_loss`` (usually a ``DeepSupervisionWrapper``).
    kd_weight : float
        Factor of the KD term (≥ 0).
    temperature : float
        Softmax temperature T > 0.
    scale_weights : sequence of float, optional
        Per-output KD weights; see `deep_supervision_kd`.
    """

    def __init__(self, supervised: nn.Module, *, kd_weight: float, temperature: float,
                 scale_weights: Optional[Sequence[float]] = None):
        super().__init__()
        if kd_weight < 0:
            raise ValueError(f"kd_weight must be >= 0, got {kd_weight}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.supervised = supervised
        self.kd_weight = float(kd_weight)
        self.temperature = float(temperature)
        self.scale_weights = None if scale_weights is None else tuple(float(w) for w in scale_weights)
        self._pending = None
        self.last_terms: dict = {}
        # One-shot gradient-norm measurement (set by the trainer before a training step, cleared after it):
        # the parameters to differentiate and the AMP loss scale. Results in last_grad_norms.
        self.measure_grad_norms: Optional[tuple] = None
        self.last_grad_norms: Optional[dict] = None

    def set_teacher(self, teacher_probs: Optional[torch.Tensor], sample_weights: Optional[torch.Tensor] = None) -> None:
        """Teacher probabilities (and optional per-sample weights) for the next call only.

        ``None`` means "no KD for this batch" (e.g. no pseudo-labelled sample in it): the KD term is logged as NaN.
        """
        self._pending = _NO_KD if teacher_probs is None else (teacher_probs, sample_weights)

    def forward(self, output, target) -> torch.Tensor:
        supervised = self.supervised(output, target)
        pending, self._pending = self._pending, None
        measure, self.measure_grad_norms = self.measure_grad_norms, None
        measure = measure if torch.is_grad_enabled() else None
        self.last_grad_norms = None
        if pending is None:  # validation, or a caller that does not distil
            self.last_terms = {"supervised": supervised.detach(), "kd": None}
            return supervised
        if pending is _NO_KD:
            self.last_terms = {"supervised": supervised.detach(), "kd": float("nan")}
            if measure is not None:
                self.last_grad_norms = {"supervised": gradient_norm(supervised, *measure), "kd": float("nan")}
            return supervised
        teacher_probs, sample_weights = pending
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.kd_weight > 0 or measure is not None)):
            kd = deep_supervision_kd(output, teacher_probs, self.temperature, scale_weights=self.scale_weights,
                                     weights=sample_weights)
        self.last_terms = {"supervised": supervised.detach(), "kd": kd.detach()}
        if measure is not None:  # each term's own gradient, before kd_weight and before nnU-Net's clipping
            self.last_grad_norms = {"supervised": gradient_norm(supervised, *measure), "kd": gradient_norm(kd, *measure)}
        if self.kd_weight == 0:
            return supervised
        return supervised + self.kd_weight * kd
