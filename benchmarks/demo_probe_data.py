"""Synthetic data for the demo probes (benchmarks/demo_probe.sh): phantoms -> convert microct --crop -> split.

    python benchmarks/demo_probe_data.py SIZE WORK N_LABELED N_SPECIMENS SLICES

writes WORK/nnUNet_raw/Dataset802_MedakaPhantomFewLabels (N_LABELED labeled, 4 test, the rest unlabeled) from
N_SPECIMENS SYNTHETIC phantoms of SIZE voxels with --slices SLICES (sagittal, frontal, transverse), seed 0, with the
demo's own steps (`nnunet_medaka.conversion.phantom.make_phantom_experiment`), and prints the wall time. Plan it
afterwards with nnUNetv2_plan_and_preprocess -d 802 -c 2d.
"""
import os
import sys
import time
from pathlib import Path

from nnunet_medaka.environment import make_nnunet_folders
from nnunet_medaka.conversion.phantom import make_phantom_experiment

size, work, n_labeled, n_specimens, slices = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
os.environ.update(make_nnunet_folders(work))
t0 = time.time()
make_phantom_experiment(work / "phantom", Path(os.environ["nnUNet_raw"]), n_specimens=n_specimens, n_labeled=n_labeled, n_test=4,
                        seed=0, size=size, slices=slices)
print("phantoms, conversion and split: %.1f s" % (time.time() - t0))
