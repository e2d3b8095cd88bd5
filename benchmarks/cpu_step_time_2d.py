"""Per-iteration time of SupervisedTrainer on the hippocampus 2d data: data loading vs training step, by torch threads.

In-process: builds the trainer on the preprocessed dataset made by protocol_hippocampus.py, runs 6 iterations of
nnU-Net's loader + train_step and prints the mean of the last 5. The plans variant is given as JSON keyword
arguments of write_small_plans ('{}' = nnU-Net's own 2d plans); threads from the NT environment variable.

    NT=1 python benchmarks/cpu_step_time_2d.py NAME '{"features_per_stage":[16,32,64,128],"batch_size":8,"patch_size":[56,40]}'
"""
import json, os, sys, time
import torch
os.environ.update(nnUNet_n_proc_DA="0", nnUNet_compile="f")
W = os.environ.get("PROTOCOL_WORK_DIR", "/work/main/bench_output/proto")
for k, v in dict(nnUNet_raw=f"{W}/nnUNet_raw", nnUNet_preprocessed=f"{W}/nnUNet_preprocessed", nnUNet_results=f"/tmp/profres").items():
    os.environ[k] = v
cfg = "/tmp/prof_cfg.json"; json.dump({"seed": 0, "num_epochs": 10, "iterations_per_epoch": 5, "mirroring": False}, open(cfg, "w"))
os.environ["nnunet_medaka_config"] = cfg
from nnunet_medaka.training.plans import write_small_plans
from nnunet_medaka.training.supervised_trainer import SupervisedTrainer
P = f"{W}/nnUNet_preprocessed/Dataset005_HippocampusFewLabels"
torch.set_num_threads(int(os.environ.get("NT", "2")))
for name, kw in [(sys.argv[1], json.loads(sys.argv[2]))]:
    plans = json.load(open(write_small_plans(P, configuration="2d", target_plans="nnUNetPlansProf", **kw))) if kw else json.load(open(f"{P}/nnUNetPlans.json"))
    ds = json.load(open(f"{P}/dataset.json"))
    t = SupervisedTrainer(dict(plans, continue_training=False), "2d", "all", ds, torch.device("cpu"))
    t.on_train_start()
    td = tn = 0
    for i in range(6):
        a = time.perf_counter(); b = next(t.dataloader_train); m = time.perf_counter(); r = t.train_step(b); e = time.perf_counter()
        if i: td += m - a; tn += e - m
    print(name, kw, "data %.2f s/it, step %.2f s/it" % (td / 5, tn / 5), flush=True)
