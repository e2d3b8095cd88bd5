"""Inference time of trained nnU-Net models on the same cases, e.g. a narrower student against a full-width one.

Each case is preprocessed once (nnU-Net's own preprocessor of the first model's plans; a narrower student keeps
its teacher's plans but for the feature maps, so the input is the same), then every model runs nnU-Net's sliding
window on it (``nnUNetPredictor.predict_sliding_window_return_logits``, no mirroring), the models interleaved and
repeated so that a change in machine load hits all of them alike. Prints JSON: per model its parameters, the median
seconds of one pass over the cases, and the speed-up against the first model.

    python benchmarks/student_speed.py "full=RESULTS/Dataset313_X/KDTrainer__P__2d" \\
        "width 0.5=RESULTS/Dataset313_X/KDTrainer__PW050__2d" --images RAW/Dataset312_Y/imagesTs --cases 10
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _narrowed(predictor, folder: str, width: float):
    """A shallow copy of ``predictor`` whose network has ``width`` of each stage's feature maps (random weights)."""
    import copy
    import json
    import tempfile

    from nnunet_medaka.training.plans import write_width_plans
    from nnunet_medaka.training.teacher import _build_network

    plans = predictor.plans_manager.plans
    configuration = Path(folder).name.rsplit("__", 1)[-1]  # Trainer__Plans__configuration
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "source.json").write_text(json.dumps(plans))
        narrow = json.loads(write_width_plans(tmp, source_plans="source", configuration=configuration,
                                              width=width).read_text())
    out = copy.copy(predictor)
    out.network = _build_network(predictor.trainer_name, narrow, configuration, predictor.dataset_json).eval()
    return out


def main() -> None:
    from nnunet_medaka.environment import nnunet_predictor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="NAME=MODEL_FOLDER", help="trained model folders (trainer__plans__"
                   "configuration); the first is the reference")
    p.add_argument("--images", type=Path, required=True, help="an nnU-Net images folder (CASE_0000.nii.gz ...)")
    p.add_argument("--cases", type=int, default=10, help="first N cases of --images (default 10)")
    p.add_argument("--fold", default="all", help="the fold of every model (default all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--narrow", type=float, nargs="*", default=[], metavar="W",
                   help="also time the first model's network narrowed to each share W of its feature maps "
                        "(`student_width`; random weights: the time of a pass does not depend on them)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fold = args.fold if args.fold == "all" else int(args.fold)

    predictors, folders = {}, []
    for spec in args.models:
        name, sep, folder = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: expected NAME=MODEL_FOLDER")
        predictor = nnunet_predictor(folder, [fold], "checkpoint_final.pth", device=torch.device("cpu"),
                                     mirroring=False)
        predictors[name] = predictor
        folders.append(folder)
    first = next(iter(predictors.values()))
    for width in args.narrow:
        predictors[f"first at width {width:g}"] = _narrowed(first, folders[0], width)
    ending = first.dataset_json["file_ending"]
    files = sorted(args.images.glob(f"*_0000{ending}"))[:args.cases]
    if not files:
        raise SystemExit(f"{args.images}: no *_0000{ending} images")
    preprocessor = first.configuration_manager.preprocessor_class(verbose=False)
    inputs = [torch.from_numpy(preprocessor.run_case([str(f)], None, first.plans_manager, first.configuration_manager,
                                                     first.dataset_json)[0]) for f in files]
    seconds = {name: [] for name in predictors}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, predictor in predictors.items():
                start = time.perf_counter()
                for x in inputs:
                    predictor.predict_sliding_window_return_logits(x)
                seconds[name].append(time.perf_counter() - start)
    reference = statistics.median(seconds[next(iter(predictors))])
    out = {name: {"parameters": sum(t.numel() for t in predictors[name].network.parameters()),
                  "seconds_per_pass": round(statistics.median(s), 3), "passes": [round(v, 3) for v in s],
                  "speedup_vs_first": round(reference / statistics.median(s), 2)} for name, s in seconds.items()}
    print(json.dumps({"cases": len(files), "threads": args.threads, "repeats": args.repeats, "models": out}, indent=2))


if __name__ == "__main__":
    main()
