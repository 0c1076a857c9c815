"""Checks an imerg-ingest store the way its users read it: Python icechunk + xarray + zarr.

Usage: check_store.py EXPECT.json

EXPECT.json: {"repo": dir (or "repo_s3": {"bucket", "prefix", "endpoint_url", "region"} with
              "s3_credentials"), "container": "file:///.../" or "s3://bucket/", "time_len": N,
              "s3_credentials": {"access_key_id", "secret_access_key"} (for s3 containers),
              "present": [{"time_index": i, "start": "RFC3339", "path": "/abs/granule.HDF5"}, ...],
              "gaps": [i, ...]}

Opens the repository after authorizing the virtual chunk container (the value comparison runs in
one process per core, IMERG_CHECK_WORKERS to change), then checks: no warnings while
opening, dims and coordinates, `time` as datetime64 equal to the granule start times, NaN where
the source files hold fill values, every value of every variable equal to what h5py reads from the
source file, and NaN plus granule_present == 0 at the gaps. Prints one line per check group and
exits non-zero on the first failure.
"""

import concurrent.futures
import json
import multiprocessing
import os
import sys
import warnings

import tempfile

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import h5py
import icechunk as ic
import numpy as np
import xarray as xr

VARIABLES = [
    "precipitation",
    "randomError",
    "probabilityLiquidPrecipitation",
    "precipitationQualityIndex",
]


def open_dataset(expect: dict) -> xr.Dataset:
    """The store as a user opens it; asserts that opening warns about nothing."""
    if "repo_s3" in expect:
        r, c = expect["repo_s3"], expect["s3_credentials"]
        storage = ic.s3_storage(
            bucket=r["bucket"],
            prefix=r["prefix"],
            endpoint_url=r["endpoint_url"],
            region=r["region"],
            allow_http=True,
            force_path_style=True,
            access_key_id=c["access_key_id"],
            secret_access_key=c["secret_access_key"],
        )
    else:
        storage = ic.local_filesystem_storage(expect["repo"])
    if "s3_credentials" in expect:
        c = expect["s3_credentials"]
        container_creds = ic.s3_credentials(
            access_key_id=c["access_key_id"], secret_access_key=c["secret_access_key"]
        )
    else:
        container_creds = ic.Credentials.LocalFileSystemAccess()
    creds = ic.containers_credentials({expect["container"]: container_creds})
    repo = ic.Repository.open(storage, authorize_virtual_chunk_access=creds)
    session = repo.readonly_session("main")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(session.store, consolidated=False, zarr_format=3, chunks=None)
    assert not caught, f"open_zarr warned: {[str(w.message) for w in caught]}"
    return ds


def compare_values(expect: dict, present: list) -> int:
    """Every value of every variable of these granules against h5py (in a worker process)."""
    ds = open_dataset(expect)
    for p in present:
        i = p["time_index"]
        with h5py.File(p["path"], "r") as f:
            for v in VARIABLES:
                h = f["Grid"][v][0]
                fill = f["Grid"][v].attrs["_FillValue"]
                want = np.where(h == fill, np.nan, h.astype(np.float32))
                got = ds[v].isel(time=i).values
                assert np.isnan(want).any(), f"{v}: the source has fill values"
                np.testing.assert_array_equal(got, want, err_msg=f"{v} at {p['path']}")
    return len(present)


def main() -> None:
    expect = json.load(open(sys.argv[1]))
    ds = open_dataset(expect)
    print("opened without warnings")

    assert dict(ds.sizes) == {
        "time": expect["time_len"],
        "lon": 3600,
        "lat": 1800,
        "nv": 2,
    }, dict(ds.sizes)
    for v in VARIABLES:
        assert ds[v].dims == ("time", "lon", "lat"), (v, ds[v].dims)
    assert ds.time.dtype == np.dtype("datetime64[ns]"), ds.time.dtype
    assert ds.time.attrs.get("source_calendar") == "julian" or ds.time.encoding.get(
        "calendar"
    ), ds.time.encoding
    print("dims and dtypes ok:", dict(ds.sizes))

    first = expect["present"][0]
    with h5py.File(first["path"], "r") as f:
        g = f["Grid"]
        for name in ["lon", "lat", "lon_bnds", "lat_bnds"]:
            np.testing.assert_array_equal(ds[name].values, g[name][...], err_msg=name)
    print("coordinates equal to the source")

    times = ds.time.values
    for p in expect["present"]:
        want = np.datetime64(p["start"].replace("Z", ""), "ns")
        assert times[p["time_index"]] == want, (p, times[p["time_index"]])
    # The axis is regular: every step is 30 minutes.
    steps = np.diff(times[expect["present"][0]["time_index"] : expect["time_len"]])
    assert (steps == np.timedelta64(30, "m")).all()
    print("time equals the granule start times for", len(expect["present"]), "granules")

    present = ds.granule_present.values
    for p in expect["present"]:
        assert present[p["time_index"]] == 1, p["time_index"]
    # The value comparison is CPU-bound (decode, compare): one process per core, each opening the
    # store itself ("spawn": icechunk's runtime threads do not survive a fork).
    workers = max(1, min(int(os.environ.get("IMERG_CHECK_WORKERS", os.cpu_count() or 1)), 8))
    # A worker costs a Python start and an import of the reader stack: only worth it for many
    # granules.
    if len(expect["present"]) < 24:
        workers = 1
    parts = [expect["present"][k::workers] for k in range(workers)]
    if workers == 1:
        compared = compare_values(expect, expect["present"])
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            compared = sum(pool.map(compare_values, [expect] * workers, parts))
    assert compared == len(expect["present"]), (compared, len(expect["present"]))
    print("every value of every variable equals h5py's, fill values are NaN")

    for i in expect["gaps"]:
        assert present[i] == 0, i
        for v in VARIABLES:
            assert bool(ds[v].isel(time=i).isnull().all()), (v, i)
    print("gaps read as NaN:", expect["gaps"])

    check_cf(ds, expect)
    print("OK")


def check_cf(ds: xr.Dataset, expect: dict) -> None:
    """What CF tools and netCDF writers need: flat attributes, standard names, a DOI, and a
    one-day subset that `to_netcdf` writes and reads back unchanged."""
    for k, v in ds.attrs.items():
        assert isinstance(v, (str, int, float)), f"root attribute {k} is {type(v).__name__}"
    for k in ["title", "institution", "source", "references", "license", "history", "Conventions"]:
        assert ds.attrs.get(k), f"root attribute {k} missing"
    assert "doi.org/10.5067/GPM/IMERG/" in ds.attrs["references"], ds.attrs["references"]
    names = ds.cf.standard_names
    assert names.get("lwe_precipitation_rate") == ["precipitation"], names
    for std in ["latitude", "longitude", "time"]:
        assert std in names, (std, names)
    for v in VARIABLES:
        assert ds[v].attrs.get("long_name"), v
        assert ds[v].attrs.get("units") in {"mm h-1", "1", "percent"}, (v, ds[v].attrs)
    print("CF attributes ok:", sorted(names))

    day = expect["present"][0]["start"][:10]
    sub = ds.sel(time=day).isel(lon=slice(0, 120), lat=slice(0, 60))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "day.nc")
        sub.to_netcdf(path)
        with xr.open_dataset(path) as back:
            assert back.sizes["time"] == sub.sizes["time"], (back.sizes, sub.sizes)
            np.testing.assert_array_equal(back.precipitation.values, sub.precipitation.values)
            np.testing.assert_array_equal(back.time.values, sub.time.values)
            assert back.precipitation.attrs["standard_name"] == "lwe_precipitation_rate"
    print("to_netcdf of", day, "ok:", sub.sizes["time"], "steps")


if __name__ == "__main__":
    main()
