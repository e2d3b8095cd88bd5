"""Synthetic data for the demo probes (benchmarks/demo_probe.sh): phantoms -> convert microct --crop -> split.

    python benchmarks/demo_probe_data.py SIZE WORK N_LABELED N_SPECIMENS SLICES

writes WORK/nnUNet_raw/Dataset802_MedakaPhantomFewLabels (N_LABELED labeled, 4 test, the rest unlabeled) from
N_SPECIMENS SYNTHETIC phantoms of SIZE voxels with --slices SLICES (sagittal, frontal, transverse), seed 0, and
prints the wall time of each step. Plan it afterwards with nnUNetv2_plan_and_preprocess -d 802 -c 2d.
"""
import os
import sys
import time
from pathlib import Path

from nnunet_medaka.conversion.convert import convert_microct
from nnunet_medaka.conversion.phantom import make_phantoms
from nnunet_medaka.conversion.split import split_dataset
from nnunet_medaka.environment import make_nnunet_folders

size, work, n_labeled, n_specimens, slices = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
os.environ.update(make_nnunet_folders(work))
raw = Path(os.environ["nnUNet_raw"])
t0 = time.time()
phantoms = make_phantoms(work / "phantom", n_labeled=n_specimens, n_unlabeled=0, seed=0, size=size, slices=slices)
t1 = time.time()
source = convert_microct(phantoms["root"], dataset_id=801, dataset_name="MedakaPhantom",
                         organs=phantoms["organs_file"], out_dir=raw, crop=True)
t2 = time.time()
split_dataset(source, dataset_id=802, dataset_name="MedakaPhantomFewLabels", n_labeled=n_labeled, n_test=4, seed=0,
              out_dir=raw)
print("phantom %.1f s, convert %.1f s, split %.1f s" % (t1 - t0, t2 - t1, time.time() - t2))
