"""Batch scaling: the same workflow on 1 and on 2 local Dask workers, in one run.

    .venv/bin/python benchmarks/bench_batch.py [--scenes 8] [--size 1536] [--repeat 1] [--threads N]

Each run starts its own LocalCluster (one task at a time per worker process, torch threads =
cores / workers: 2 for one worker on 2 cores, 1 each for two) and runs predict -> vectorize ->
areas with a tiny random-init FCN/MobileNetV2 bundle on generated 3-band scenes. Reported:
makespan (first unit start to last unit end) and wall time including the cluster start, the
speed-up, the CPU seconds of the units and the cores they kept busy (CPU / makespan: on a
machine loaded by others it stays under the core count whatever geoseg does), the model reads
per worker (1: the model is read once per worker), and the machine's load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoseg.batch import run_workflow
from geoseg.bundle import ModelBundle
from geoseg.classes import ClassMap
from geoseg.workflow import Workflow
from tests.data.rasters import write_raster

BANDS = ("B2", "B3", "B4")


def _t(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker (default: cores / workers)",
    )
    args = ap.parse_args()
    os.environ.setdefault("GEOSEG_PROGRESS", "0")
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        model = tmp / "tiny.pt"
        ModelBundle.random_init(
            arch="fcn",
            encoder="mobilenet_v2",
            bands=BANDS,
            classes=ClassMap.from_names(["forest", "grass", "urban", "water"]),
            dtype="uint16",
            chip_size=256,
            overlap=32,
        ).save(model)
        (tmp / "scenes").mkdir()
        for i in range(args.scenes):
            write_raster(
                tmp / "scenes" / f"s{i}.tif",
                width=args.size,
                height=args.size,
                count=3,
                seed=i,
                descriptions=list(BANDS),
            )
        results: dict[int, list[float]] = {1: [], 2: []}
        walls: dict[int, list[float]] = {1: [], 2: []}
        cores: dict[int, float] = {}
        reads: dict[int, list[int]] = {}
        load_before = os.getloadavg()
        for _ in range(args.repeat):
            for n in (1, 2):
                out = tmp / f"out{n}"
                shutil.rmtree(out, ignore_errors=True)
                wf = Workflow.model_validate(
                    {
                        "name": f"bench{n}",
                        "output": str(out),
                        "model": str(model),
                        "scenes": [str(tmp / "scenes" / "*.tif")],
                        "stages": ["predict", "vectorize", "areas"],
                    }
                )
                t0 = time.perf_counter()
                rep = run_workflow(wf, workers=n, threads_per_worker=args.threads, resume=False)
                total = time.perf_counter() - t0
                man = json.loads((out / "manifest.json").read_text())
                busy = [man["units"][u]["seconds"]["total"] for u in rep.done]
                stages: dict[str, float] = {}
                for u in rep.done:
                    for k, v in man["units"][u]["seconds"].items():
                        stages[k] = stages.get(k, 0.0) + v
                assert rep.ok and len(rep.done) == args.scenes, rep.failed
                t_first = min(_t(man["units"][u]["started"]) for u in rep.done)
                t_last = max(_t(man["units"][u]["finished"]) for u in rep.done)
                makespan = t_last - t_first
                cpu = sum(man["units"][u]["seconds"]["cpu"] for u in rep.done)
                cores[n] = round(cpu / makespan, 2)
                per_worker: dict[str, int] = {}
                for u in rep.done:
                    w = man["units"][u]["worker"]
                    per_worker[w] = max(per_worker.get(w, 0), man["units"][u]["model_reads"])
                reads[n] = sorted(per_worker.values())
                results[n].append(makespan)
                walls[n].append(total)
                print(
                    f"workers={n}: makespan {makespan:6.2f} s (first unit start -> last unit end), "
                    f"{total:6.2f} s wall incl. cluster start, sum of unit times {sum(busy):6.2f} s "
                    f"({', '.join(f'{k} {v:.2f}' for k, v in stages.items() if k != 'total')})",
                    flush=True,
                )
        w1, w2 = min(results[1]), min(results[2])
        print(
            json.dumps(
                {
                    "scenes": args.scenes,
                    "size": args.size,
                    "threads_per_worker": args.threads or "cores / workers",
                    "cpus": os.cpu_count(),
                    "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                    "makespan_1_worker_s": round(w1, 2),
                    "makespan_2_workers_s": round(w2, 2),
                    "speedup_makespan": round(w1 / w2, 2),
                    "wall_incl_cluster_start_s": {n: round(min(v), 2) for n, v in walls.items()},
                    "speedup_wall": round(min(walls[1]) / min(walls[2]), 2),
                    "cores_used": cores,
                    "model_reads_per_worker": reads,
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
