"""Side-by-side read benchmark: the virtual store (chunks = the granules' HDF5 chunks, one time step
each) against the native time-series store (sharded, 2880-step inner chunks), read the way users
read them (icechunk + xarray + zarr, zarr's default codec pipeline unless --zarr-pipeline fused).

Every measurement runs in a fresh Python process (imports not timed) and times separately:
repository open + read-only session, xr.open_zarr, and the read (`.values`). Store reads are
counted by wrapping the session store in CountingStore (a zarr WrapperStore): gets of keys under
data variables and the bytes they return, by request kind (whole key, byte range, suffix = a shard
index). Icechunk's own manifest and snapshot fetches happen below the zarr store and are not
counted.

Cases (point = --lon/--lat, default 1800/900; N steps = the last N of the store's present range,
so fewer if the store holds less):
  point-day     one cell, 48 steps            point-month   one cell, 1488 steps
  box-month     10 x 10 cells, 1488 steps     map           every cell, the last present step
  point-year    one cell, 17520 steps         point-record  one cell, every present step
(point-year and point-record are meant for the stores of build_sparse.py.)

Usage:
  read_bench.py --virtual REPO --container URL --native REPO [--runs 5] --out results.jsonl
                [--cases point-day,point-month,box-month,map] [--lon 1800 --lat 900]
                [--variable precipitation] [--runs-for point-record=1] [--label TEXT]
                [--zarr-pipeline default|fused]
Writes one JSON line per (case, store) to --out (appending) with the medians and every run, and
prints a Markdown table. The reading code is in small functions (open_session, CountingStore,
open_dataset, selection, timed_read) for other scripts to import.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    # name: (steps, lon cells, lat cells); steps None = every present step, 0 = one step
    "point-day": (48, 1, 1),
    "point-month": (1488, 1, 1),
    "box-month": (1488, 10, 10),
    "map": (1, None, None),
    "point-year": (17520, 1, 1),
    "point-record": (None, 1, 1),
}
DEFAULT_CASES = "point-day,point-month,box-month,map"
DATA_VARS = (
    "precipitation",
    "randomError",
    "probabilityLiquidPrecipitation",
    "precipitationQualityIndex",
)


# ---- store reading (importable) ------------------------------------------------------------------


def configure_zarr(pipeline: str = "default") -> None:
    import zarr

    if pipeline == "fused":
        zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"})


def open_session(repo: str, container: str | None = None, snapshot: str | None = None):
    """A read-only session on a local repository; `container` (a file:// prefix) is authorized for
    virtual chunks."""
    import icechunk as ic

    storage = ic.local_filesystem_storage(repo)
    if container:
        creds = ic.containers_credentials({container: ic.Credentials.LocalFileSystemAccess()})
        r = ic.Repository.open(storage, authorize_virtual_chunk_access=creds)
    else:
        r = ic.Repository.open(storage)
    return r.readonly_session(snapshot_id=snapshot) if snapshot else r.readonly_session("main")


def counting_store_class():
    """CountingStore, defined on first use so that importing this module does not import zarr."""
    from zarr.abc.store import ByteRequest, RangeByteRequest, Store, SuffixByteRequest  # noqa: F401
    from zarr.storage import WrapperStore

    class CountingStore(WrapperStore):
        """Counts gets (get, get_partial_values, and the ranged reads zarr's sharding issues
        through get_ranges) of keys under `data_vars`, and the bytes returned."""

        def __init__(self, store, data_vars=DATA_VARS):
            super().__init__(store)
            self.data_vars = set(data_vars)
            self.reset()

        def reset(self):
            self.counts = {
                "data_reads": 0,
                "data_bytes": 0,
                "data_whole": 0,
                "data_range": 0,
                "data_suffix": 0,
                "other_reads": 0,
                "other_bytes": 0,
                "partial_values_calls": 0,
            }

        def _count(self, key, byte_range, buf):
            n = len(buf) if buf is not None else 0
            c = self.counts
            if key.split("/", 1)[0] in self.data_vars:
                c["data_reads"] += 1
                c["data_bytes"] += n
                if byte_range is None:
                    c["data_whole"] += 1
                elif isinstance(byte_range, SuffixByteRequest):
                    c["data_suffix"] += 1
                else:
                    c["data_range"] += 1
            else:
                c["other_reads"] += 1
                c["other_bytes"] += n

        async def get(self, key, prototype, byte_range=None):
            buf = await self._store.get(key, prototype, byte_range)
            self._count(key, byte_range, buf)
            return buf

        async def get_partial_values(self, prototype, key_ranges):
            key_ranges = list(key_ranges)
            bufs = await self._store.get_partial_values(prototype, key_ranges)
            self.counts["partial_values_calls"] += 1
            for (key, byte_range), buf in zip(key_ranges, bufs):
                self._count(key, byte_range, buf)
            return bufs

        # WrapperStore forwards these to the wrapped store, whose default implementations call
        # its own get: route them through ours (Store's defaults, built on self.get) instead.
        def get_ranges(self, key, byte_ranges, *, prototype, **kwargs):
            return Store.get_ranges(self, key, byte_ranges, prototype=prototype, **kwargs)

        def _get_many(self, requests):
            return Store._get_many(self, requests)

    return CountingStore


def open_dataset(store):
    import xarray as xr

    return xr.open_zarr(store, consolidated=False, zarr_format=3, chunks=None)


def present_range(ds) -> tuple[int, int]:
    """[first, last + 1) of the steps with granule_present == 1 (the whole axis without it)."""
    import numpy as np

    if "granule_present" not in ds:
        return 0, ds.sizes["time"]
    idx = np.flatnonzero(ds["granule_present"].values)
    if idx.size == 0:
        raise SystemExit("the store holds no granule")
    return int(idx[0]), int(idx[-1]) + 1


def selection(case: str, first: int, end: int, lon: int, lat: int) -> dict:
    """The isel() arguments of a case over the present range [first, end)."""
    steps, nlon, nlat = CASES[case]
    t0 = first if steps is None else max(first, end - steps)
    sel = {"time": slice(t0, end)}
    if nlon is not None:
        sel["lon"] = lon if nlon == 1 else slice(lon, lon + nlon)
        sel["lat"] = lat if nlat == 1 else slice(lat, lat + nlat)
    return sel


def timed_read(ds, variable: str, sel: dict):
    t = time.perf_counter()
    values = ds[variable].isel(sel).values
    return values, time.perf_counter() - t


def measure(job: dict) -> dict:
    """One cold measurement (run in a fresh process): open, open_zarr, read, counts."""
    import resource

    t = time.perf_counter()
    import numpy as np
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    import_s = time.perf_counter() - t
    configure_zarr(job.get("zarr_pipeline", "default"))
    import warnings

    warnings.simplefilter("ignore")
    t = time.perf_counter()
    session = open_session(job["repo"], job.get("container"))
    open_repo_s = time.perf_counter() - t
    store = counting_store_class()(session.store)
    t = time.perf_counter()
    ds = open_dataset(store)
    open_zarr_s = time.perf_counter() - t
    open_counts = dict(store.counts)
    store.reset()
    sel = {k: (slice(*v) if isinstance(v, list) else v) for k, v in job["sel"].items()}
    values, read_s = timed_read(ds, job["variable"], sel)
    v = np.asarray(values, dtype=np.float64)
    return {
        "import_s": import_s,
        "open_repo_s": open_repo_s,
        "open_zarr_s": open_zarr_s,
        "read_s": read_s,
        "total_s": open_repo_s + open_zarr_s + read_s,
        **store.counts,
        "open_other_reads": open_counts["other_reads"],
        "shape": list(values.shape),
        "nan": int(np.isnan(v).sum()),
        "sum": float(np.nansum(v)),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---- driver --------------------------------------------------------------------------------------


def run_cold(job: dict) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"worker failed ({job['store']} {job['case']}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


MEDIAN_KEYS = ["open_repo_s", "open_zarr_s", "read_s", "total_s", "data_reads", "data_bytes",
               "data_whole", "data_range", "data_suffix", "max_rss_mb"]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(measure(json.loads(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--virtual", required=True)
    p.add_argument("--container", required=True, help="the virtual chunk container, file:///.../")
    p.add_argument("--native", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--runs-for", default="", help="per-case runs, e.g. point-record=1,point-year=3")
    p.add_argument("--out", required=True)
    p.add_argument("--cases", default=DEFAULT_CASES)
    p.add_argument("--lon", type=int, default=1800)
    p.add_argument("--lat", type=int, default=900)
    p.add_argument("--variable", default="precipitation")
    p.add_argument("--zarr-pipeline", choices=["default", "fused"], default="default")
    p.add_argument("--label", default="")
    a = p.parse_args()
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c}; known: {', '.join(CASES)}")
    runs_for = {k: int(v) for k, v in (kv.split("=") for kv in a.runs_for.split(",") if kv)}

    # The present range of the virtual store decides every case's steps, for both stores.
    import warnings

    warnings.simplefilter("ignore")
    ds = open_dataset(open_session(a.virtual, a.container).store)
    first, end = present_range(ds)
    stores = {"virtual": (a.virtual, a.container), "native": (a.native, None)}
    rows = []
    with open(a.out, "a") as out:
        for case in cases:
            sel = selection(case, first, end, a.lon, a.lat)
            sel_json = {k: ([v.start, v.stop] if isinstance(v, slice) else v) for k, v in sel.items()}
            steps = sel["time"].stop - sel["time"].start
            medians = {}
            for name, (repo, container) in stores.items():
                job = {"store": name, "case": case, "repo": repo, "container": container,
                       "sel": sel_json, "variable": a.variable, "zarr_pipeline": a.zarr_pipeline}
                runs = [run_cold(job) for _ in range(runs_for.get(case, a.runs))]
                med = {k: statistics.median(r[k] for r in runs) for k in MEDIAN_KEYS}
                medians[name] = (med, runs)
                line = {
                    "bench": "native-read", "label": a.label, "case": case, "store": name,
                    "repo": repo, "variable": a.variable, "sel": sel_json, "steps": steps,
                    "shape": runs[0]["shape"], "zarr_pipeline": a.zarr_pipeline,
                    "cores": os.cpu_count(), "host": platform.node(),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "median": med, "runs": runs,
                }
                if name == "native":
                    vmed = medians["virtual"][0]
                    line["ratio_native_virtual"] = {
                        k: (med[k] / vmed[k] if vmed[k] else None)
                        for k in ("read_s", "total_s", "data_reads", "data_bytes")
                    }
                    vr, nr = medians["virtual"][1][0], runs[0]
                    line["same_values"] = vr["sum"] == nr["sum"] and vr["nan"] == nr["nan"]
                out.write(json.dumps(line) + "\n")
                out.flush()
                rows.append(line)
                print(f"{case} {name}: read {med['read_s']:.3f} s, {med['data_reads']:.0f} reads",
                      file=sys.stderr, flush=True)
    print_table(rows)


def print_table(rows: list) -> None:
    print("| case | steps | store | open repo s | open_zarr s | read s | total s | data reads "
          "(whole/range/suffix) | data MB | native/virtual read | same values |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        m = r["median"]
        ratio = r.get("ratio_native_virtual", {}).get("read_s")
        print(
            f"| {r['case']} | {r['steps']} | {r['store']} | {m['open_repo_s']:.3f} | "
            f"{m['open_zarr_s']:.3f} | {m['read_s']:.3f} | {m['total_s']:.3f} | "
            f"{m['data_reads']:.0f} ({m['data_whole']:.0f}/{m['data_range']:.0f}/"
            f"{m['data_suffix']:.0f}) | {m['data_bytes'] / 1e6:.2f} | "
            f"{'' if ratio is None else f'{ratio:.3g}'} | "
            f"{'' if 'same_values' not in r else ('yes' if r['same_values'] else 'no')} |"
        )


if __name__ == "__main__":
    main()
