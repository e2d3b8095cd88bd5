"""The KD term on tiny hand-made tensors: definition, scaling, classes, ignore label, deep supervision, gradients."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_medaka.errors import MedakaError
from nnunet_medaka.training.kd_loss import (SupervisedPlusKDLoss, deep_supervision_kd, kd_divergence, pool_probabilities,
                                   teacher_probabilities)
from nnunet_medaka.training.kd_trainer import PSEUDO_CASES_KEY, pseudo_case_ids, sample_weights_for_keys
from nnunet_medaka.training.teacher import TeacherEnsemble, TeacherRuntime


def reference_kd(student: np.ndarray, teacher: np.ndarray, T: float) -> float:
    """Plain numpy: T² · mean over voxels of Σ_c p_t (log p_t − log p_s)."""
    def softmax(z):
        e = np.exp(z / T - (z / T).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    pt, ps = softmax(teacher.astype(np.float64)), softmax(student.astype(np.float64))
    return float(T ** 2 * (pt * (np.log(pt) - np.log(ps))).sum(axis=1).mean())


def nnunet_scale_weights(n_outputs: int) -> list:
    """nnU-Net 2.8.1 `_build_loss` weights (non-DDP): 1/2**i, lowest scale 0, normalised."""
    w = np.array([1 / 2 ** i for i in range(n_outputs)])
    w[-1] = 0
    return list(w / w.sum())


def small_net(seed: int, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(),
                               torch.nn.Conv3d(4, classes, 1))


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 4, 6, 6, generator=g), torch.randn(2, 4, 4, 6, 6, generator=g)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
def test_matches_reference_definition(logits, T):
    s, t = logits
    got = kd_divergence(s, teacher_probabilities([t], T), T)
    assert got.dtype == torch.float32
    assert math.isclose(float(got), reference_kd(s.numpy(), t.numpy(), T), rel_tol=1e-5)


def test_zero_for_same_network_at_T1():
    student = small_net(1)
    teacher = TeacherEnsemble([copy.deepcopy(student)])
    x = torch.randn(2, 1, 8, 8, 8)
    kd = kd_divergence(student(x), teacher_probabilities(teacher(x), 1.0), 1.0)
    assert abs(float(kd.detach())) < 1e-6


def test_T_squared_scaling(logits):
    s, t = logits
    T = 3.0
    plain_kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="none").sum(1).mean()
    assert math.isclose(float(kd_divergence(s, teacher_probabilities([t], T), T)), T ** 2 * float(plain_kl), rel_tol=1e-6)
    # Scaling both logits by T makes the tempered distributions those of T = 1: the term is exactly T² times larger.
    at_1 = kd_divergence(s, teacher_probabilities([t], 1.0), 1.0)
    scaled = kd_divergence(s * T, teacher_probabilities([t * T], T), T)
    assert math.isclose(float(scaled), T ** 2 * float(at_1), rel_tol=1e-5)


def test_sums_over_classes_not_mean(logits):
    s, t = logits
    C = s.shape[1]
    kd = float(kd_divergence(s, teacher_probabilities([t], 1.0), 1.0))
    # what F.kl_div(reduction="mean") returns: the mean over classes too
    mean_over_everything = float(F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="none").mean())
    assert math.isclose(kd, C * mean_over_everything, rel_tol=1e-5)  # the public-code bug divides by C


def test_voxel_weights_drop_voxels_without_renormalising(logits):
    s, t = logits
    p = teacher_probabilities([t], 2.0)
    full = float(kd_divergence(s, p, 2.0))
    mask = torch.zeros(2, 1, 4, 6, 6)
    mask[0] = 1
    half = float(kd_divergence(s, p, 2.0, weights=mask))
    first_sample_only = float(kd_divergence(s[:1], p[:1], 2.0))
    assert math.isclose(half, first_sample_only / 2, rel_tol=1e-5)
    assert half < full


def test_ignore_label_changes_supervised_term_only():
    torch.manual_seed(0)
    ignore = 3
    supervised = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                                weight_ce=1, weight_dice=1, ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss)
    loss = SupervisedPlusKDLoss(supervised, kd_weight=1.0, temperature=2.0)
    out = torch.randn(2, 3, 4, 6, 6)
    target = torch.randint(0, 3, (2, 1, 4, 6, 6))
    probs = teacher_probabilities([torch.randn(2, 3, 4, 6, 6)], 2.0)
    loss.set_teacher(probs)
    loss(out, target)
    before = dict(loss.last_terms)
    target_ignored = target.clone()
    target_ignored[:, :, :2] = ignore
    loss.set_teacher(probs)
    loss(out, target_ignored)
    after = loss.last_terms
    assert float(after["supervised"]) != pytest.approx(float(before["supervised"]))
    # Decision: KD still applies on ignore-label voxels (the teacher knows something there).
    assert float(after["kd"]) == pytest.approx(float(before["kd"]))


def test_deep_supervision_uses_nnunet_scale_weights():
    torch.manual_seed(0)
    shapes = [(8, 8, 8), (4, 4, 4), (2, 2, 2), (1, 1, 1)]
    outputs = [torch.randn(2, 3, *s) for s in shapes]
    teacher = teacher_probabilities([torch.randn(2, 3, 8, 8, 8)], 2.0)
    w = nnunet_scale_weights(len(shapes))
    expected = sum(wi * float(kd_divergence(o, pool_probabilities(teacher, o.shape[2:]), 2.0))
                   for wi, o in zip(w, outputs) if wi)
    got = float(deep_supervision_kd(outputs, teacher, 2.0, scale_weights=w))
    assert math.isclose(got, expected, rel_tol=1e-5)
    # The lowest scale has weight 0 in nnU-Net: changing that output changes nothing.
    changed = outputs[:-1] + [torch.randn(2, 3, 1, 1, 1) * 10]
    assert math.isclose(float(deep_supervision_kd(changed, teacher, 2.0, scale_weights=w)), got, rel_tol=1e-6)
    # kd_scales = full: only the first output, weight 1.
    full = float(deep_supervision_kd(outputs, teacher, 2.0))
    assert math.isclose(full, float(kd_divergence(outputs[0], teacher, 2.0)), rel_tol=1e-6)


def test_ds_wrapper_total_is_nnunet_loss_plus_weighted_kd():
    torch.manual_seed(0)
    w = nnunet_scale_weights(3)
    base = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    supervised = DeepSupervisionWrapper(base, w)
    loss = SupervisedPlusKDLoss(supervised, kd_weight=0.7, temperature=2.0, scale_weights=w)
    outputs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    targets = [torch.randint(0, 3, (2, 1, *o.shape[2:])) for o in outputs]
    teacher = teacher_probabilities([torch.randn(2, 3, 8, 8, 8)], 2.0)
    loss.set_teacher(teacher)
    total = float(loss(outputs, targets))
    expected = float(supervised(outputs, targets)) + 0.7 * float(deep_supervision_kd(outputs, teacher, 2.0, scale_weights=w))
    assert math.isclose(total, expected, rel_tol=1e-5)
    # Validation (no teacher pending): the supervised loss alone; the teacher is used once only.
    assert math.isclose(float(loss(outputs, targets)), float(supervised(outputs, targets)), rel_tol=1e-6)
    assert loss.last_terms["kd"] is None
    loss.set_teacher(None)  # a batch without pseudo-labelled samples
    assert math.isclose(float(loss(outputs, targets)), float(supervised(outputs, targets)), rel_tol=1e-6)
    assert math.isnan(loss.last_terms["kd"])


def test_gradient_flows_only_into_student():
    student = small_net(1)
    teacher = TeacherEnsemble([small_net(2), small_net(3)])
    teacher.train()  # asking for train mode must not unfreeze it
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    probs = teacher_probabilities(teacher(x), 2.0)
    assert not probs.requires_grad
    kd_divergence(student(x), probs, 2.0).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_zero_kd_weight_builds_no_kd_graph():
    student = small_net(1)
    loss = SupervisedPlusKDLoss(lambda o, t: o.mean() * 0, kd_weight=0.0, temperature=1.0)
    x = torch.randn(1, 1, 4, 4, 4)
    loss.set_teacher(teacher_probabilities([torch.randn(1, 3, 4, 4, 4)], 1.0))
    total = loss(student(x), None)
    assert not loss.last_terms["kd"].requires_grad and float(loss.last_terms["kd"]) > 0
    total.backward()
    assert all(float(p.grad.abs().sum()) == 0 for p in student.parameters())


def test_ensemble_averages_probabilities():
    a, b = torch.randn(1, 3, 2, 2, 2), torch.randn(1, 3, 2, 2, 2)
    mean = teacher_probabilities([a, b], 2.0)
    assert torch.allclose(mean, (F.softmax(a / 2, 1) + F.softmax(b / 2, 1)) / 2)
    assert torch.allclose(mean.sum(1), torch.ones(1, 2, 2, 2))


def test_pooling_keeps_distributions_and_rejects_bad_shapes():
    p = teacher_probabilities([torch.randn(1, 4, 8, 6, 4)], 1.0)
    pooled = pool_probabilities(p, (4, 3, 2))
    assert pooled.shape == (1, 4, 4, 3, 2)
    assert torch.allclose(pooled.sum(1), torch.ones(1, 4, 3, 2))
    assert torch.allclose(pooled[0, :, 0, 0, 0], p[0, :, :2, :2, :2].mean(dim=(1, 2, 3)))
    p2d = teacher_probabilities([torch.randn(1, 2, 8, 8)], 1.0)
    assert pool_probabilities(p2d, (2, 4)).shape == (1, 2, 2, 4)
    with pytest.raises(ValueError, match="each axis must divide"):
        pool_probabilities(p, (3, 3, 2))


def test_argument_errors(logits):
    s, t = logits
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_divergence(s, teacher_probabilities([t], 1.0), 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        kd_divergence(s, teacher_probabilities([t[:1]], 1.0), 1.0)
    with pytest.raises(ValueError, match="scale weights for"):
        deep_supervision_kd([s, s], teacher_probabilities([t], 1.0), 1.0, scale_weights=[1.0])
    with pytest.raises(ValueError, match="kd_weight must be >= 0"):
        SupervisedPlusKDLoss(torch.nn.Identity(), kd_weight=-1, temperature=1.0)


def test_pseudo_scope_sample_weights():
    ids = pseudo_case_ids({PSEUDO_CASES_KEY: ["pseudo_001", "pseudo_002"]})
    w = sample_weights_for_keys(np.array(["case_000", "pseudo_002"]), ids, torch.device("cpu"))
    assert w.tolist() == [0.0, 1.0]
    assert sample_weights_for_keys(["case_000"], None, torch.device("cpu")) is None
    # Per-sample weights at every DS scale: the labelled sample contributes nothing, the mean keeps its denominator.
    s, t = torch.randn(2, 3, 4, 4, 4), teacher_probabilities([torch.randn(2, 3, 4, 4, 4)], 1.0)
    only_pseudo = float(deep_supervision_kd([s], t, 1.0, weights=w))
    assert math.isclose(only_pseudo, float(kd_divergence(s[1:], t[1:], 1.0)) / 2, rel_tol=1e-5)


@pytest.mark.parametrize("value", [None, [], "case_1", [1, 2], [""]])
def test_pseudo_scope_needs_case_list(value):
    dataset_json = {} if value is None else {PSEUDO_CASES_KEY: value}
    with pytest.raises(MedakaError, match=f"{PSEUDO_CASES_KEY}.*kd_scope=all"):
        pseudo_case_ids(dataset_json)


@pytest.mark.parametrize("runtime", [TeacherRuntime("bf16"), TeacherRuntime("fp32", channels_last=True),
                                     TeacherRuntime("bf16", channels_last=True)])
def test_teacher_runtime_variants_agree_with_fp32(runtime):
    """Reduced-precision weights and channels-last (the CUDA defaults use fp16; bf16 is the CPU stand-in)."""
    net = small_net(4)
    x = torch.randn(2, 1, 8, 8, 8)
    reference = teacher_probabilities(TeacherEnsemble([copy.deepcopy(net)]).prepare(torch.device("cpu"))(x), 2.0)
    variant = TeacherEnsemble([copy.deepcopy(net)], runtime).prepare(torch.device("cpu"))
    assert next(variant.parameters()).dtype == runtime.dtype()
    probs = teacher_probabilities(variant(x), 2.0)
    assert probs.dtype == torch.float32 and not probs.is_inference()
    assert torch.allclose(probs, reference, atol=2e-2)
