"""From the demo to data in xarray: opens the store that `./scripts/run.sh` writes, draws the
newest half hour as a map and the precipitation of a 5 x 5 degree box around its wettest cell as a
time series, and saves both as PNGs.

Usage: python examples/quickstart.py [DATA_DIR] [--out DIR]

DATA_DIR is the demo's data directory (default ./imerg-data: repository in DATA_DIR/repo, granules
in DATA_DIR/granules); the PNGs go to DIR (default DATA_DIR): quickstart-map.png and
quickstart-series.png. Needs icechunk, xarray, zarr and matplotlib (tests/python/requirements.txt).

The same lines read the production store: swap the local storage for ic.s3_storage(...) and the
local container for NASA's bucket with Earthdata credentials (docs/dataset.md).
"""

import argparse
import os
import sys

import icechunk as ic
import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def open_store(data_dir: str) -> xr.Dataset:
    """The demo's store, with read access to the local granule directory its chunks point into."""
    storage = ic.local_filesystem_storage(os.path.join(data_dir, "repo"))
    # The container the repository was created with (file:///.../granules/): the virtual chunks
    # are byte ranges in those files.
    containers = ic.Repository.open(storage).config.virtual_chunk_containers
    creds = ic.containers_credentials(
        {prefix: ic.Credentials.LocalFileSystemAccess() for prefix in containers}
    )
    repo = ic.Repository.open(storage, authorize_virtual_chunk_access=creds)
    session = repo.readonly_session("main")
    return xr.open_zarr(session.store, consolidated=False, zarr_format=3, chunks=None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", nargs="?", default="imerg-data")
    ap.add_argument("--out", default=None, help="where the PNGs go (default DATA_DIR)")
    args = ap.parse_args()
    data_dir = os.path.abspath(args.data_dir)
    out = os.path.abspath(args.out or data_dir)
    os.makedirs(out, exist_ok=True)

    # Icechunk's own log lines (a warning that local storage is not for concurrent writers)
    # mean nothing to a reader.
    ic.set_logs_filter("error")
    ds = open_store(data_dir)
    print(ds.attrs["title"])
    print("cite:", ds.attrs["references"])

    # The time axis spans the whole record; granule_present says which steps hold data.
    present = np.flatnonzero(ds.granule_present.values)
    if present.size == 0:
        print("the store holds no granule yet: start ./scripts/run.sh and wait", file=sys.stderr)
        return 1
    steps = ds.isel(time=slice(int(present[0]), int(present[-1]) + 1))
    print(f"{present.size} granules from {steps.time.values[0]} to {steps.time.values[-1]}")

    # A map: the data are (time, lon, lat), so put lon across and lat up.
    latest = steps.precipitation.isel(time=-1)
    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    latest.plot(x="lon", y="lat", ax=ax, cmap="Blues", vmin=0, vmax=20,
                cbar_kwargs={"label": "precipitation (mm h-1)"})
    ax.set_title(f"IMERG precipitation, half hour starting {str(latest.time.values)[:16]}Z")
    map_png = os.path.join(out, "quickstart-map.png")
    fig.savefig(map_png, dpi=80)
    plt.close(fig)

    # A time series: the mean over a 5 x 5 degree box around the map's wettest cell.
    wettest = latest.where(latest == latest.max(), drop=True)
    lon0, lat0 = float(wettest.lon[0]), float(wettest.lat[0])
    box = steps.precipitation.sel(lon=slice(lon0 - 2.5, lon0 + 2.5), lat=slice(lat0 - 2.5, lat0 + 2.5))
    series = box.mean(dim=["lon", "lat"])
    fig, ax = plt.subplots(figsize=(10, 3.5), constrained_layout=True)
    series.plot(ax=ax, marker=".")
    ax.set_ylabel("mean precipitation (mm h-1)")
    ax.set_title(f"5 x 5 degree box around {lon0:.2f}E, {lat0:.2f}N")
    series_png = os.path.join(out, "quickstart-series.png")
    fig.savefig(series_png, dpi=80)
    plt.close(fig)

    print("map:", map_png)
    print("time series:", series_png, f"({series.size} steps, max {float(series.max()):.2f} mm h-1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
