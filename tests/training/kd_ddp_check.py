"""KD under DistributedDataParallel on CPU (gloo, 2 ranks); run as a script by tests/test_kd_trainer.py.

nnU-Net's own DDP path needs CUDA and NCCL (``run_ddp`` hard-codes both), so this exercises the pieces KDTrainer
adds to it: each rank loads its own frozen teacher, only the student is DDP-wrapped, nnU-Net's DDP scale weights
(lowest 1e-6, so no parameter is unused), and the per-rank KD mean averaged by DDP equals the full-batch KD
gradient. Usage: ``python kd_ddp_check.py TEACHER_FOLDER STUDENT_PLANS_JSON STUDENT_DATASET_JSON``.
"""
import copy
import json
import os
import socket
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_medaka.training.kd_loss import SupervisedPlusKDLoss, deep_supervision_kd, teacher_probabilities
from nnunet_medaka.training.teacher import load_teacher

WORLD = 2
T = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, teacher_folder: str, plans_path: str, dataset_json_path: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    plans, dataset_json = json.load(open(plans_path)), json.load(open(dataset_json_path))
    teacher = load_teacher(teacher_folder, [0], "checkpoint_final.pth", device=torch.device("cpu"), student_plans=plans,
                           student_configuration="3d_fullres", student_dataset_json=dataset_json,
                           hash_files=rank == 0)
    pm = PlansManager(plans)
    torch.manual_seed(0)
    student = nnUNetTrainer.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    n_out = len(pm.get_configuration("3d_fullres").pool_op_kernel_sizes) - 1
    w = np.array([1 / 2 ** i for i in range(n_out)])
    w[-1] = 1e-6  # what nnU-Net's _build_loss uses under DDP without compile
    w = list(w / w.sum())

    g = torch.Generator().manual_seed(123)
    x = torch.randn(2 * WORLD, 1, 32, 32, 32, generator=g)
    targets = [torch.randint(0, 3, (2 * WORLD, 1, 32 // 2 ** i, 32 // 2 ** i, 32 // 2 ** i), generator=g) for i in range(n_out)]
    mine = slice(2 * rank, 2 * rank + 2)

    # single-process reference: the KD gradient over the whole global batch
    reference = copy.deepcopy(student)
    deep_supervision_kd(reference(x), teacher_probabilities(teacher.ensemble(x), T), T, scale_weights=w).backward()

    ddp = DDP(copy.deepcopy(student))
    kd = deep_supervision_kd(ddp(x[mine]), teacher_probabilities(teacher.ensemble(x[mine]), T), T, scale_weights=w)
    kd.backward()
    for (name, p_ref), p_ddp in zip(reference.named_parameters(), ddp.module.parameters()):
        assert torch.allclose(p_ref.grad, p_ddp.grad, rtol=1e-4, atol=1e-7), f"rank {rank}: KD gradient of {name} differs"

    # full training steps: nnU-Net's DDP supervised loss plus KD, with the teacher of this rank
    base = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": True}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    loss = SupervisedPlusKDLoss(DeepSupervisionWrapper(base, w), kd_weight=1.0, temperature=T, scale_weights=w)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    kd_values = []
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        loss.set_teacher(teacher_probabilities(teacher.ensemble(x[mine]), T))
        loss(ddp(x[mine]), [t[mine] for t in targets]).backward()
        opt.step()
        kd_values.append(float(loss.last_terms["kd"]))
    flat = torch.cat([p.detach().flatten() for p in ddp.module.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), "student weights diverged between ranks"
    logged = [None] * WORLD
    dist.all_gather_object(logged, kd_values)  # as KDTrainer.on_train_epoch_end gathers the KD term
    assert all(np.isfinite(v).all() for v in logged)
    if rank == 0:
        print(f"ddp ok: per-rank KD terms {logged}, teacher sha256 {list(teacher.sha256.values())[0][:12]}")
    dist.destroy_process_group()


if __name__ == "__main__":
    teacher_folder, plans_path, dataset_json_path = sys.argv[1:4]
    # fork: the ranks inherit the imports above instead of repeating them (no CUDA or torch threads used yet)
    mp.start_processes(worker, args=(teacher_folder, plans_path, dataset_json_path, free_port()), nprocs=WORLD,
                       join=True, start_method="fork")
