"""Reader benchmarks with the users' stack (Python icechunk + xarray + zarr) on a store written by
imerg-ingest: time to open the dataset (repository open + session + xr.open_zarr) and to read
the whole `time` axis, median of N runs, each in a fresh repository object. Reading data
values needs the source objects; see BENCHMARKS.md for which stores have them.

Usage: reader.py REPO [N]   (prints one JSON object)"""

import json
import statistics
import sys
import time
import warnings

import icechunk as ic
import xarray as xr

warnings.simplefilter("ignore")
repo_dir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 7


def open_ds():
    repo = ic.Repository.open(ic.local_filesystem_storage(repo_dir))
    return xr.open_zarr(
        repo.readonly_session("main").store, consolidated=False, zarr_format=3, chunks=None
    )


opens, times = [], []
for _ in range(n):
    t0 = time.perf_counter()
    ds = open_ds()
    opens.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    values = ds.time.values
    times.append(time.perf_counter() - t0)
print(
    json.dumps(
        {
            "repo": repo_dir,
            "time_len": int(values.shape[0]),
            "granules_present": int(ds.granule_present.values.sum()),
            "open_zarr_s_median": statistics.median(opens),
            "read_time_axis_s_median": statistics.median(times),
            "runs": n,
        }
    )
)
