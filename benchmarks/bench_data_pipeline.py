"""Benchmark: ingest, profile and validate the flights year (1x and 10x) against the I/O floor.

Each measurement runs in a fresh subprocess so its peak RSS is its own. The floor is the
time to merely read the same Parquet file with pandas, measured in the same run; results
are printed as ratios to it. Usage: ``make bench`` or
``python benchmarks/bench_data_pipeline.py [--copies 1 10]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_input(copies: int, dest: Path) -> int:
    import pandas as pd
    from flightdeck.core.settings import Settings
    from flightdeck.core.spec import load_spec
    from flightdeck.data import replay

    spec = load_spec(Settings.from_env().specs_dir / "flights.yaml")
    frame = replay.load_replay_source(spec)[list(spec.features_source.columns)]
    parts = []
    for i in range(copies):
        part = frame.copy()
        part["year"] = (part["year"].astype(int) + i).astype(str)  # keep entity keys unique
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    for name, col in spec.features_source.columns.items():
        if col.type in ("int", "float"):
            out[name] = pd.to_numeric(out[name].replace("NA", None))
    out["time_hour"] = pd.to_datetime(out["time_hour"], utc=True)
    out.to_parquet(dest, index=False)
    return len(out)


def measure(mode: str, path: Path, home: Path) -> dict[str, float]:
    """Run one mode in this process; print wall seconds and peak RSS (MiB) as JSON."""
    start = time.perf_counter()
    if mode == "gx_import":
        import great_expectations  # noqa: F401  (fixed cost paid once per validate task)

        rows = 0
    elif mode == "floor":
        import pandas as pd

        rows = len(pd.read_parquet(path))
    else:
        from flightdeck.core import warehouse
        from flightdeck.core.settings import Settings
        from flightdeck.core.spec import load_spec
        from flightdeck.data import runners

        os.environ["FLIGHTDECK_HOME"] = str(home)
        settings = Settings.from_env()
        base = load_spec(settings.specs_dir / "flights.yaml")
        source = base.features_source.model_copy(update={"format": "parquet", "batch_date": None,
                                                          "pattern": "bench_*.parquet"})
        spec = base.model_copy(update={"sources": {"schedule": source}, "quality": base.quality.model_copy(
            update={"max_event_lead": "P36500D"})})
        ctx = runners.StageContext(spec, settings, run_id=f"bench-{mode}")
        ctx.landing.put_file(path, f"flights/bench_{path.stem}.parquet")
        runners.claim_landed_files(ctx)
        batch = warehouse.list_batches(ctx.engine, spec.name, run_id=ctx.run_id)[0]
        result = runners.ingest_batch(ctx, batch)
        rows = result["rows_in"]
        if mode == "pipeline":
            warehouse.update_batch(ctx.engine, spec.name, batch["batch_id"], status="staged")
            runners.profile_batches(ctx)
            runners.validate_batches(ctx)
    seconds = time.perf_counter() - start
    return {"mode": mode, "rows": rows, "seconds": round(seconds, 3), "peak_rss_mib": round(peak_rss_mib(), 1)}


def peak_rss_mib() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's, inherited at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--one", nargs=3, metavar=("MODE", "PATH", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], Path(args.one[1]), Path(args.one[2]))))
        return
    print(f"chunk rows: {os.environ.get('FLIGHTDECK_CHUNK_ROWS', '200000')}; cores: {os.cpu_count()}")
    print("| input | rows | stage | seconds | rows/s | x floor | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for copies in args.copies:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"flights_x{copies}.parquet"
            build_input(copies, path)
            results = {}
            for mode in ("gx_import", "floor", "ingest", "pipeline"):
                out = subprocess.run([sys.executable, __file__, "--one", mode, str(path), str(Path(tmp) / mode)],
                                     capture_output=True, text=True, check=True)
                results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            floor = results["floor"]["seconds"]
            fixed = results["gx_import"]["seconds"]
            print(f"| {copies}x | - | import great_expectations (fixed per task) | {fixed:.2f} | - | - | "
                  f"{results['gx_import']['peak_rss_mib']:.0f} |")
            for mode, label in (("floor", "read Parquet (floor)"), ("ingest", "ingest"),
                                ("pipeline", "ingest + profile + validate")):
                r = results[mode]
                print(f"| {copies}x | {r['rows']:,} | {label} | {r['seconds']:.2f} | "
                      f"{r['rows'] / r['seconds']:,.0f} | {r['seconds'] / floor:.1f} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
