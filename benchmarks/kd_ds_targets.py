"""KD targets at the deep-supervision scales: pooled full-resolution teacher probabilities vs the teacher's DS heads.

KDTrainer distils every DS output against the teacher's full-resolution softmax average-pooled to that scale. The
alternative is the teacher's own low-resolution heads. For a trained teacher this prints, per scale, how far the two
targets are apart (T²·KL, argmax agreement) and how well each one's argmax matches nnU-Net's DS label target
(nearest-exact downsampled ground truth, as ``DownsampleSegForDSTransform`` makes it) as mean foreground Dice.

Usage::

    python benchmarks/kd_ds_targets.py nnUNet_results/DatasetXXX/Trainer__Plans__3d_fullres --fold 0

Needs nnUNet_preprocessed (the teacher's preprocessed cases) and, for plugin-trained teachers, nnUNet_extTrainer.
Cases default to the fold's validation cases from splits_final.json. Output: one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
from pathlib import Path


def tiles(shape, patch):
    """Start corners of patch-sized tiles covering ``shape`` (the last tile on each axis flush with the end)."""
    starts = []
    for s, p in zip(shape, patch):
        axis = list(range(0, max(s - p, 0) + 1, p))
        if axis[-1] + p < s:
            axis.append(s - p)
        starts.append(axis)
    return list(itertools.product(*starts))


def dice_fg(pred, gt, n_classes):
    import numpy as np

    scores = []
    for c in range(1, n_classes):
        p, g = pred == c, gt == c
        denom = p.sum() + g.sum()
        if denom:
            scores.append(2 * (p & g).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_folder")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--checkpoint", default="checkpoint_final.pth")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--cases", nargs="*", help="case ids (default: the fold's validation cases)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_medaka.training.kd_loss import kd_divergence, pool_probabilities, teacher_probabilities
    from nnunet_medaka.training.teacher import load_teacher
    from nnunet_medaka.training.teacher_files import locate_teacher

    files = locate_teacher(args.model_folder, [args.fold], args.checkpoint)
    configuration = torch.load(files.checkpoints[args.fold], map_location="cpu", weights_only=False)["init_args"]["configuration"]
    with contextlib.redirect_stdout(sys.stderr):
        teacher = load_teacher(files.folder, [args.fold], args.checkpoint, device=torch.device("cpu"),
                               student_plans=files.plans, student_configuration=configuration,
                               student_dataset_json=files.dataset_json, hash_files=False)
    net = teacher.ensemble.networks[0]
    cfg = files.plans["configurations"][configuration]
    pre = Path(os.environ["nnUNet_preprocessed"]) / files.plans["dataset_name"]
    data_folder = str(pre / cfg.get("data_identifier", f"{files.plans['plans_name']}_{configuration}"))
    cases = args.cases
    if not cases:
        splits = json.loads((pre / "splits_final.json").read_text())
        cases = splits[args.fold]["val"]
    dataset = infer_dataset_class(data_folder)(data_folder, cases)
    strides = np.array(cfg["architecture"]["arch_kwargs"]["strides"])
    factors = np.cumprod(strides, axis=0)[:-1]  # DS outputs: [full, 1/2, 1/4, ...]
    patch = cfg["patch_size"]
    n_classes = len([k for k in files.dataset_json["labels"] if k != "ignore"])
    T = args.temperature
    per_scale = {i: {"kl": [], "agree": [], "dice_pooled": [], "dice_heads": []} for i in range(len(factors))}
    n_tiles = 0
    for case in cases:
        data, seg, *_ = dataset.load_case(case)
        data, seg = torch.from_numpy(np.asarray(data)).float(), torch.from_numpy(np.asarray(seg)).long()
        pad = [max(p - s, 0) for p, s in zip(patch, data.shape[1:])]
        if any(pad):
            spec = [x for p in reversed(pad) for x in (0, p)]
            data, seg = F.pad(data, spec), F.pad(seg, spec, value=0)
        seg = seg.clamp_min(0)
        for start in tiles(data.shape[1:], patch):
            sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
            x, y = data[(slice(None), *sl)][None], seg[(slice(None), *sl)][None].float()
            with torch.inference_mode():
                net.decoder.deep_supervision = True
                heads = net(x)
                net.decoder.deep_supervision = False
            full = teacher_probabilities([heads[0]], T)
            target = full
            n_tiles += 1
            for i, f in enumerate(factors):
                shape = [p // int(k) for p, k in zip(patch, f)]
                target = pool_probabilities(target, shape)
                head = teacher_probabilities([heads[i]], T)
                gt = F.interpolate(y, shape, mode="nearest-exact")[0, 0].numpy()
                per_scale[i]["kl"].append(float(kd_divergence(torch.log(head.clamp_min(1e-12)), target, 1.0)) * T ** 2)
                per_scale[i]["agree"].append(float((target.argmax(1) == head.argmax(1)).float().mean()))
                per_scale[i]["dice_pooled"].append(dice_fg(target.argmax(1)[0].numpy(), gt, n_classes))
                per_scale[i]["dice_heads"].append(dice_fg(head.argmax(1)[0].numpy(), gt, n_classes))
    report = {"model_folder": str(files.folder), "fold": args.fold, "cases": cases, "tiles": n_tiles, "temperature": T,
              "scales": [{"scale": f"1/{int(factors[i][0])}" if factors[i][0] > 1 else "full",
                          "T2_KL_heads_vs_pooled": float(np.mean(v["kl"])),
                          "argmax_agreement": float(np.mean(v["agree"])),
                          "fg_dice_vs_ds_label_pooled": float(np.nanmean(v["dice_pooled"])),
                          "fg_dice_vs_ds_label_heads": float(np.nanmean(v["dice_heads"]))}
                         for i, v in per_scale.items()]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
