"""The peer, side by side: VirtualiZarr 2.8 (HDFParser) + icechunk-python on the same synthetic
granules that benches/append_day.sh appends with imerg-ingest.

1. Virtualize the day's 48 granules with VirtualiZarr's HDFParser (median per granule).
2. Build a store of the same size as ours by the peer's own path: the day's virtual dataset,
   its `time` shifted back one day per commit, written with `to_icechunk(append_dim="time")`,
   one commit per day, PREFILL days (default 365: the one-year store), or as many as fit in
   the time budget. Manifests split along `time` every 524 steps, as ours (256 KiB).
3. Append the real day onto fresh copies of that store, each in a fresh process: virtualize the
   48 granules, then `to_icechunk(append_dim="time")` + commit (timed apart), peak RSS.

Usage (the peer's own venv, benches/requirements-peer.txt):
  peer_virtualizarr.py SRC WORK [--prefill-days 365] [--budget-s 900] [--reps 5] [--out FILE]
SRC is the granule root (bucket layout) of the day, e.g. WORK_DIR/src of append_day.sh.
Prints JSON lines (one per prefill commit, one per append, then a summary) to --out and stdout.

The synthetic granules have no HDF5 dimension scales, so the HDFParser names dimensions
phony_dim_N and cannot combine lon (3600) and lat (1800): the script drops lon, lat and the
bounds (the peer stores less than ours) and renames the phony dimensions to time, lon, lat.
`time` is kept raw (decode_times=False): the file's calendar is "julian", which needs cftime."""

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import warnings

warnings.simplefilter("ignore")

import icechunk as ic  # noqa: E402
import xarray as xr  # noqa: E402
from obspec_utils.registry import ObjectStoreRegistry  # noqa: E402
from obstore.store import LocalStore  # noqa: E402
from virtualizarr import open_virtual_dataset  # noqa: E402
from virtualizarr.parsers import HDFParser  # noqa: E402

DROP = ["lon", "lat", "lon_bnds", "lat_bnds", "time_bnds", "nv", "lonv", "latv", "Intermediate"]
SPLIT_STEPS = 524
DAY_S = 86400


def peak_rss_bytes():
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def virtualize_day(src):
    """The day's granules as one virtual dataset, and the seconds each took."""
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    paths = sorted(glob.glob(os.path.join(src, "GPM_L3", "**", "*.HDF5"), recursive=True))
    assert len(paths) == 48, f"expected 48 granules under {src}, found {len(paths)}"
    parts, seconds = [], []
    for p in paths:
        t0 = time.perf_counter()
        vds = open_virtual_dataset(
            "file://" + os.path.abspath(p),
            registry=registry,
            parser=HDFParser(group="Grid", drop_variables=DROP),
            loadable_variables=["time"],
            decode_times=False,
        )
        seconds.append(time.perf_counter() - t0)
        parts.append(
            vds.swap_dims({"phony_dim_0": "time"}).rename_dims(
                {"phony_dim_1": "lon", "phony_dim_2": "lat"})
        )
    day = xr.concat(parts, dim="time", coords="minimal", compat="override",
                    combine_attrs="override")
    return day, seconds


def repo_config(src):
    split = ic.ManifestSplittingConfig.from_dict(
        {ic.ManifestSplitCondition.AnyArray(): {
            ic.ManifestSplitDimCondition.DimensionName("time"): SPLIT_STEPS}}
    )
    config = ic.RepositoryConfig(manifest=ic.ManifestConfig(splitting=split))
    prefix = "file://" + os.path.abspath(src).rstrip("/") + "/"
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(prefix[len("file://"):]))
    )
    creds = ic.containers_credentials({prefix: ic.Credentials.LocalFileSystemAccess()})
    return config, creds


def open_repo(path, src, create=False):
    config, creds = repo_config(src)
    storage = ic.local_filesystem_storage(path)
    if create:
        return ic.Repository.create(storage, config=config, authorize_virtual_chunk_access=creds)
    return ic.Repository.open(storage, authorize_virtual_chunk_access=creds)


def write_day(repo, vds, first):
    session = repo.writable_session("main")
    if first:
        vds.vz.to_icechunk(session.store)
    else:
        vds.vz.to_icechunk(session.store, append_dim="time")
    session.commit(f"day at time {int(vds.time.values[0])}")


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def append_child(src, repo_path):
    t0 = time.perf_counter()
    day, seconds = virtualize_day(src)
    virtualize_s = time.perf_counter() - t0
    repo = open_repo(repo_path, src)
    t0 = time.perf_counter()
    write_day(repo, day, first=False)
    commit_s = time.perf_counter() - t0
    print(json.dumps({"append_commit_s": commit_s, "virtualize_day_s": virtualize_s,
                      "virtualize_granule_s_median": statistics.median(seconds),
                      "peak_rss_bytes": peak_rss_bytes()}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("work")
    ap.add_argument("--prefill-days", type=int, default=365)
    ap.add_argument("--budget-s", type=float, default=900)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--append-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.append_child:
        return append_child(a.src, a.work)

    out = open(a.out, "w") if a.out else None

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    day, seconds = virtualize_day(a.src)
    emit({"virtualize_granule_s": seconds, "median": statistics.median(seconds)})

    os.makedirs(a.work, exist_ok=True)
    base = os.path.join(a.work, "peer-store")
    shutil.rmtree(base, ignore_errors=True)
    repo = open_repo(base, a.src, create=True)
    started = time.perf_counter()
    days = 0
    for d in range(a.prefill_days):
        shifted = day.assign_coords(time=day.time + (d - a.prefill_days) * DAY_S)
        t0 = time.perf_counter()
        write_day(repo, shifted, first=(d == 0))
        days += 1
        emit({"prefill_day": d, "commit_s": time.perf_counter() - t0,
              "rss_peak_bytes": peak_rss_bytes(), "elapsed_s": time.perf_counter() - started})
        if time.perf_counter() - started > a.budget_s:
            break
    build_s = time.perf_counter() - started
    store_bytes = dir_bytes(base)

    appends = []
    for rep in range(a.reps):
        work = os.path.join(a.work, "peer-appended")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work, symlinks=True)
        r = subprocess.run([sys.executable, __file__, "--append-child", a.src, work],
                           check=True, capture_output=True, text=True)
        row = json.loads(r.stdout.strip().splitlines()[-1]) | {"rep": rep}
        appends.append(row)
        emit(row)
    emit({"summary": {
        "prefill_days": days, "prefill_granules": days * 48, "prefill_wall_s": build_s,
        "store_bytes": store_bytes,
        "virtualize_granule_s_median": statistics.median(seconds),
        "append_commit_s_median": statistics.median(r["append_commit_s"] for r in appends),
        "append_virtualize_day_s_median":
            statistics.median(r["virtualize_day_s"] for r in appends),
        "append_peak_rss_bytes_median": statistics.median(r["peak_rss_bytes"] for r in appends),
        "reps": len(appends),
    }})


if __name__ == "__main__":
    main()
