"""Peak memory of `convert microct` on one large uint16 stack (default 1000^3 voxels, 2 GB).

Writes a synthetic specimen (an ImageJ uint16 TIFF stack plus a uint8 multi-label volume) plane by
plane, converts it in a child process, and prints JSON with the child's peak resident memory
(``ru_maxrss``) and its ratio to one image volume's bytes. The issue's target is a ratio <= 2.
The child also reports its resident memory right after importing the converter, so the figure can
be read with or without the interpreter's own baseline.

    python benchmarks/convert_memory.py                     # 1000^3, no downsampling
    python benchmarks/convert_memory.py --size 400 --downsample 2
"""
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from nnunet_medaka.conversion.convert import convert_microct
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
convert_microct(sys.argv[1], dataset_id=999, dataset_name="MemoryBenchmark", out_dir=sys.argv[2],
                downsample=int(sys.argv[3]), crop=sys.argv[4] == "1")
print(json.dumps({"baseline_rss_bytes": baseline, "convert_seconds": round(time.perf_counter() - start, 1),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_specimen(root: Path, n: int, seed: int = 0) -> None:
    """A noisy ellipsoid 'fish' with two organs, written plane by plane (never whole in memory)."""
    import tifffile

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "organs.json").write_text(json.dumps({"organs": {"body": 1, "core": 2}}))
    y, x = np.meshgrid(np.arange(n) - n / 2, np.arange(n) - n / 2, indexing="ij")

    def planes(labels: bool):
        for z in range(n):
            dz = (z - n / 2) / (0.3 * n)
            body = (x / (0.45 * n)) ** 2 + (y / (0.25 * n)) ** 2 + dz**2 <= 1
            core = (x / (0.15 * n)) ** 2 + (y / (0.1 * n)) ** 2 + dz**2 <= 1
            if labels:
                yield np.where(core, 2, np.where(body, 1, 0)).astype(np.uint8)
            else:
                grey = 3000 + 12000 * body + 6000 * core + rng.normal(0, 800, (n, n))
                yield np.clip(grey, 0, 65535).astype(np.uint16)

    meta = {"spacing": 2.0, "unit": "um", "axes": "ZYX"}
    for folder, dtype, labels in (("images", np.uint16, False), ("labels", np.uint8, True)):
        tifffile.imwrite(root / folder / "specimen.tif", planes(labels), shape=(n, n, n), dtype=dtype, imagej=True,
                         resolution=(0.5, 0.5), metadata=meta)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="voxels per axis (default 1000)")
    parser.add_argument("--downsample", type=int, default=1, help="downsampling factor (default 1)")
    parser.add_argument("--crop", action="store_true", help="also crop to the specimen (one more reading pass)")
    parser.add_argument("--workdir", help="folder for the temporary files (needs ~3.5 bytes per voxel, default $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args(argv)

    n = args.size
    volume_bytes = n**3 * 2
    work = Path(tempfile.mkdtemp(prefix="convert_memory_", dir=args.workdir))
    free = shutil.disk_usage(work).free
    if free < 4 * volume_bytes:
        print(f"error: {work} has {free / 2**30:.1f} GiB free, needs about {4 * volume_bytes / 2**30:.1f}", file=sys.stderr)
        return 2
    try:
        start = time.perf_counter()
        write_specimen(work / "source", n)
        written = time.perf_counter() - start
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(work / "source"), str(work / "raw"), str(args.downsample),
             "1" if args.crop else "0"],
            capture_output=True, text=True,
        )
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return child.returncode
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        outputs = sum(p.stat().st_size for p in (work / "raw").rglob("*.nii.gz"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    peak = measured["peak_rss_bytes"]
    with open("/proc/meminfo") as f:
        mem_total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
    print(json.dumps({
        "size": [n, n, n],
        "dtype": "uint16",
        "volume_bytes": volume_bytes,
        "labels": "uint8 multi-label volume of the same size",
        "downsample": args.downsample,
        "crop": args.crop,
        "peak_rss_bytes": peak,
        "peak_rss_over_volume": round(peak / volume_bytes, 3),
        "baseline_rss_bytes": measured["baseline_rss_bytes"],
        "peak_minus_baseline_over_volume": round((peak - measured["baseline_rss_bytes"]) / volume_bytes, 3),
        "rusage_children_peak_bytes": children_peak,
        "within_2x": peak <= 2 * volume_bytes,
        "convert_seconds": measured["convert_seconds"],
        "write_input_seconds": round(written, 1),
        "output_bytes": outputs,
        "machine": {"cpus": os.cpu_count(), "memory_bytes": mem_total, "python": platform.python_version(),
                    "platform": platform.platform()},
        "files_kept": str(work) if args.keep else None,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
