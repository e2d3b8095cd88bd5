"""Generate synthetic Medaka micro-CT specimens and convert them into an nnU-Net raw dataset.

The same as `nnunet-medaka phantom SPECIMENS` followed by `nnunet-medaka convert microct SPECIMENS`:
the specimens (TIFF stacks + per-organ masks, organs.json) stay in SPECIMENS, the dataset
(imagesTr/labelsTr, imagesUnlabeled/ for pseudo-labels, labelsUnlabeled_gt/ for evaluation) goes
to $nnUNet_raw or --out-dir.

    python dataset_conversion/medaka_phantom.py SPECIMENS [-d 1] [--labeled 5] [--unlabeled 10] [--seed 0]
"""
import argparse
import logging
import sys

from nnunet_medaka.conversion.convert import convert_microct
from nnunet_medaka.errors import MedakaError
from nnunet_medaka.conversion.phantom import make_phantoms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specimens", help="folder for the generated specimens (created)")
    parser.add_argument("-d", "--dataset-id", type=int, default=1, help="nnU-Net dataset id (default 1)")
    parser.add_argument("-n", "--name", default="MedakaPhantom", help="dataset name (default MedakaPhantom)")
    parser.add_argument("--labeled", type=int, default=5, help="specimens with masks (default 5)")
    parser.add_argument("--unlabeled", type=int, default=10, help="specimens without masks (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=80, help="voxels along the body (default 80)")
    parser.add_argument("--out-dir", help="folder that receives the dataset (default $nnUNet_raw)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing specimens and dataset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = make_phantoms(
            args.specimens, n_labeled=args.labeled, n_unlabeled=args.unlabeled, seed=args.seed, size=args.size,
            overwrite=args.overwrite,
        )
        path = convert_microct(
            summary["root"], dataset_id=args.dataset_id, dataset_name=args.name, organs=summary["organs_file"],
            out_dir=args.out_dir, overwrite=args.overwrite, progress=True,
        )
    except MedakaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
