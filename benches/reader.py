"""Reader benchmarks with the users' stack (Python icechunk + xarray + zarr) on a store written by
imerg-ingest, median of N runs, each in a fresh repository object:
- open: repository open + read-only session + xr.open_zarr (loads the `time` index);
- time axis: the whole `time` array read with zarr in a fresh session (what open_zarr loads);
- one step: one time step of `precipitation` (3600 x 1800 float32, 25 virtual chunks) through
  xarray, at the last step the store holds; needs the source files (a store whose last day was
  appended from real granules: benches/append_day.sh). Skipped with --no-data.

Usage: reader.py REPO [N] [--no-data]   (prints one JSON object)"""

import json
import statistics
import sys
import time
import warnings

import icechunk as ic
import numpy as np
import xarray as xr
import zarr

warnings.simplefilter("ignore")
args = [a for a in sys.argv[1:] if not a.startswith("--")]
repo_dir = args[0]
n = int(args[1]) if len(args) > 1 else 7
read_data = "--no-data" not in sys.argv


def open_repo():
    storage = ic.local_filesystem_storage(repo_dir)
    containers = ic.Repository.open(storage).config.virtual_chunk_containers or {}
    creds = ic.containers_credentials(
        {
            p: (
                ic.Credentials.LocalFileSystemAccess()
                if p.startswith("file://")
                else ic.s3_credentials(anonymous=True)
            )
            for p in containers
        }
    )
    return ic.Repository.open(storage, authorize_virtual_chunk_access=creds)


def open_ds(repo):
    return xr.open_zarr(
        repo.readonly_session("main").store, consolidated=False, zarr_format=3, chunks=None
    )


opens, axes, steps = [], [], []
for _ in range(n):
    repo = open_repo()
    t0 = time.perf_counter()
    ds = open_ds(repo)
    opens.append(time.perf_counter() - t0)

    repo = open_repo()
    t0 = time.perf_counter()
    values = zarr.open_array(repo.readonly_session("main").store, path="time", mode="r")[:]
    axes.append(time.perf_counter() - t0)

# A store without the presence flag (the peer's) holds every step it has.
present = (
    ds.granule_present.values if "granule_present" in ds else np.ones(ds.sizes["time"], "u1")
)
last = int(np.flatnonzero(present)[-1])
result = {
    "repo": repo_dir,
    "time_len": int(values.shape[0]),
    "granules_present": int(present.sum()),
    "open_zarr_s_median": statistics.median(opens),
    "read_time_axis_s_median": statistics.median(axes),
    "runs": n,
}
if read_data:
    for _ in range(n):
        repo = open_repo()
        ds = open_ds(repo)
        t0 = time.perf_counter()
        step = ds.precipitation.isel(time=last).values
        steps.append(time.perf_counter() - t0)
    result |= {
        "one_step_index": last,
        "one_step_time": str(ds.time.values[last]),
        "one_step_s_median": statistics.median(steps),
        "one_step_nan_fraction": float(np.isnan(step).mean()),
        "one_step_mean_mm_per_h": float(np.nanmean(step)),
    }
print(json.dumps(result))
