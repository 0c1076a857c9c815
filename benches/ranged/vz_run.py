"""The peer's path: VirtualiZarr 2.8's HDFParser over obstore's S3Store, granules in flight at once.

  python vz_run.py --endpoint http://127.0.0.1:PORT --bucket B [--concurrency 8] KEY...
  python vz_run.py --endpoint ... --bucket B --keys-file KEYS.txt
  env: AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

Prints one JSON line per granule, {"key", "seconds", "ok", "error", "refs"} (refs: the chunk
references of the four data variables of /Grid; 22 each, 88 in all, for the synthetic granules),
then {"total_seconds", "granules", "granules_per_second", "concurrency", "peak_rss_bytes", ...}.

What it calls (VirtualiZarr 2.8.0, obstore 0.12), `--mode dataset` (the default):
  open_virtual_dataset("s3://B/KEY", registry=ObjectStoreRegistry({"s3://B": S3Store(...)}),
                       parser=HDFParser(group="Grid", drop_variables=DROP))
DROP (`--drop-variables`, default lon, lat, their bounds, time_bnds, nv, lonv, latv and the
Intermediate group, as benches/peer_virtualizarr.py) is needed with our granules: they have no
HDF5 dimension scales, so HDFParser names every dataset's dimensions phony_dim_0, phony_dim_1...
by axis, and xarray refuses a Dataset where phony_dim_0 is 3600 long on lon, 1800 on lat and 1
on the data variables. `--mode manifest` stops at the parser, HDFParser(group="Grid")(url,
registry) -> ManifestStore, with nothing dropped and no xarray Dataset built (same reads).
The ObjectStoreRegistry is obspec_utils' (virtualizarr.registry re-exports it, deprecated).

HDFParser reads the file through obspec_utils' BlockStoreReader (its default reader_factory):
one HEAD for the size, then 1 MiB blocks with GetRanges, cached per granule; h5py parses the
HDF5 from that file-like object. No chunk data are loaded: `loadable_variables` is left at
VirtualiZarr's default (None: only dimension coordinates, variables whose single dimension has
their own name, are loaded; these granules have no HDF5 dimension scales, so the dimensions are
phony_dim_N and nothing is loaded). `--loadable-variables none` passes [] (nothing, ever). decode_times=False, as
benches/peer_virtualizarr.py: with CF time decoding xarray reads `time`'s values through the
ManifestStore (2 more GETs of 4 bytes), and the granules' calendar "julian" needs cftime.

`--executor thread` (default) runs the granules on a ThreadPoolExecutor; h5py serializes all
HDF5 calls behind one global lock, reads from the file-like object included, so threads overlap
little. `--executor process` uses a ProcessPoolExecutor instead (peak RSS: the largest worker).
"""

import argparse
import concurrent.futures as cf
import json
import os
import resource
import sys
import time
import traceback
import warnings

DATA_VARS = ["precipitation", "randomError", "probabilityLiquidPrecipitation",
             "precipitationQualityIndex"]
DROP = ["lon", "lat", "lon_bnds", "lat_bnds", "time_bnds", "nv", "lonv", "latv", "Intermediate"]

_ctx = {}  # per process: the registry, the bucket, the loadable_variables


def peak_rss_bytes():
    """This process's peak RSS (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def init(endpoint, bucket, region, loadable, mode, drop):
    """Build this process's registry (the S3Store reads the AWS_* credentials from the env)."""
    warnings.simplefilter("ignore")
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import S3Store

    store = S3Store(bucket, endpoint=endpoint, region=region,
                    client_options={"allow_http": True})
    _ctx.update(registry=ObjectStoreRegistry({f"s3://{bucket}": store}), bucket=bucket,
                loadable=loadable, mode=mode, drop=drop)


def virtualize(key):
    from virtualizarr import open_virtual_dataset
    from virtualizarr.manifests import ManifestArray
    from virtualizarr.parsers import HDFParser

    url = f"s3://{_ctx['bucket']}/{key}"
    t0 = time.perf_counter()
    row = {"key": key, "seconds": None, "ok": False, "error": None, "refs": None}
    try:
        if _ctx["mode"] == "manifest":
            store = HDFParser(group="Grid")(url, _ctx["registry"])
            arrays = store._group.arrays  # no public accessor in 2.8
            row["seconds"] = time.perf_counter() - t0
            loaded = []
        else:
            vds = open_virtual_dataset(url, registry=_ctx["registry"],
                                       parser=HDFParser(group="Grid", drop_variables=_ctx["drop"]),
                                       loadable_variables=_ctx["loadable"],
                                       decode_times=False)
            row["seconds"] = time.perf_counter() - t0
            arrays = {n: v.data for n, v in vds.variables.items()}
            loaded = sorted(n for n, a in arrays.items() if not isinstance(a, ManifestArray))
        refs = {}
        for name in DATA_VARS:
            if name not in arrays:
                raise KeyError(f"{name} not in the virtual dataset ({sorted(arrays)})")
            if not isinstance(arrays[name], ManifestArray):
                raise TypeError(f"{name} was loaded ({type(arrays[name]).__name__}), not virtual")
            refs[name] = len(arrays[name].manifest.dict())  # missing chunks are left out
        row["refs"] = sum(refs.values())
        row["refs_by_var"] = refs
        row["loaded_variables"] = loaded
        row["ok"] = True
    except Exception as e:  # noqa: BLE001 -- reported, not raised
        row["seconds"] = time.perf_counter() - t0
        row["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stderr)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="S3 endpoint, e.g. http://127.0.0.1:PORT")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--concurrency", type=int, default=8, help="granules in flight")
    ap.add_argument("--keys-file", help="object keys, one a line")
    ap.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    ap.add_argument("--executor", choices=["thread", "process"], default="thread")
    ap.add_argument("--loadable-variables", default="default",
                    help="`default` (VirtualiZarr's: None), `none` ([]) or NAME,NAME...")
    ap.add_argument("--mode", choices=["dataset", "manifest"], default="dataset",
                    help="open_virtual_dataset (default) or the parser's ManifestStore only")
    ap.add_argument("--drop-variables", default=",".join(DROP),
                    help="for --mode dataset: comma-separated (default: %(default)s)")
    ap.add_argument("keys", nargs="*")
    a = ap.parse_args()
    keys = list(a.keys)
    if a.keys_file:
        with open(a.keys_file) as f:
            keys += [ln.strip() for ln in f if ln.strip()]
    if not keys:
        ap.error("no keys")
    loadable = (None if a.loadable_variables == "default" else []
                if a.loadable_variables == "none" else a.loadable_variables.split(","))
    drop = [v for v in a.drop_variables.split(",") if v]
    initargs = (a.endpoint, a.bucket, a.region, loadable, a.mode, drop)

    if a.executor == "thread":
        init(*initargs)
        import virtualizarr.parsers  # noqa: F401 -- imports outside the timed part
        pool = cf.ThreadPoolExecutor(a.concurrency)
    else:
        pool = cf.ProcessPoolExecutor(a.concurrency, initializer=init, initargs=initargs)
        list(pool.map(_warm, range(a.concurrency)))  # start and import in the workers first

    ok = 0
    t0 = time.perf_counter()
    with pool:
        for row in pool.map(virtualize, keys):
            ok += row["ok"]
            print(json.dumps(row), flush=True)
    total = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({
        "total_seconds": total, "granules": len(keys), "ok": ok,
        "granules_per_second": len(keys) / total if total > 0 else None,
        "concurrency": a.concurrency, "executor": a.executor, "mode": a.mode,
        "loadable_variables": a.loadable_variables,
        "peak_rss_bytes": peak_rss_bytes() if a.executor == "thread" else children,
    }), flush=True)
    return 0 if ok == len(keys) else 1


def _warm(_):
    import virtualizarr.parsers  # noqa: F401
    time.sleep(0.2)  # so that every worker gets one
    return os.getpid()


if __name__ == "__main__":
    sys.exit(main())
