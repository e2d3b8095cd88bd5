"""Convert the MSD hippocampus subset (../shared/data/msd_hippocampus) into Dataset004_Hippocampus.

Labels 1 anterior, 2 posterior; channel "MRI" (per-image z-score in nnU-Net). The source data stay
where they are (CC-BY-SA 4.0, not part of this repository); only the nnU-Net copy is written, into
$nnUNet_raw or --out-dir.

    python dataset_conversion/Dataset004_Hippocampus.py [--source DIR] [-d 4] [--overwrite]
"""
import argparse
import logging
import sys
from pathlib import Path

from nnunet_medaka.conversion.convert import convert_msd
from nnunet_medaka.errors import MedakaError

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "msd_hippocampus"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"MSD folder (default {DEFAULT_SOURCE})")
    parser.add_argument("-d", "--dataset-id", type=int, default=4, help="nnU-Net dataset id (default 4)")
    parser.add_argument("-n", "--name", default="Hippocampus", help="dataset name (default Hippocampus)")
    parser.add_argument("--out-dir", help="folder that receives the dataset (default $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--workers", type=int, default=1, help="cases converted in parallel (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = convert_msd(
            args.source, dataset_id=args.dataset_id, dataset_name=args.name, labels="anterior=1,posterior=2",
            channel_names="MRI", out_dir=args.out_dir, overwrite=args.overwrite, workers=args.workers, progress=True,
        )
    except MedakaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
