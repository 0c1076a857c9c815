"""Checks that a native time-series store holds exactly what its virtual store holds, the way users
read both: Python icechunk + xarray + zarr.

Usage: compare_native.py EXPECT.json

EXPECT.json: {"virtual_repo": dir, "container": "file:///.../" (the virtual chunk container),
              "native_repo": dir,
              "steps": [time indices] (optional; default: every index where the virtual store's
                       granule_present == 1, plus every gap between the first and last of them),
              "native_snapshot": id (optional; default: branch main of the native repository),
              "virtual_snapshot": id (optional; default: branch main of the virtual repository)}

Checks, one line per group, exiting non-zero with a message on the first failure: both stores open
without warnings; same sizes, dims, variables, coordinates and dtypes; same attributes (root and
every variable) and the same xarray encoding minus the chunk/shard/codec keys; the same zarr
metadata (coordinates verbatim, data variables except chunk_grid and codecs) and byte-equal
coordinate chunks; equal coordinate values; and, for every compared step and data variable, equal
values twice: raw (opened again with mask_and_scale=False, compared as unsigned integers of the
same width, so bit for bit) and decoded (NaN == NaN). Gap steps must be NaN in both. The decoded
values are xarray's CF decoding of the raw read (xr.conventions.decode_cf_variable with each
store's own attributes: the decoder open_zarr applies), so each native chunk is read once;
IMERG_COMPARE_DECODED_READ=1 reads them a second time through the decoded datasets instead
(twice the time: a native inner chunk costs ~0.5 ms to decode whichever steps are wanted). The last line
is JSON: {"compared_steps": n, "variables": 4, "ok": true}.

Reading plan: the native store holds a tile's whole time block in one inner chunk (2880 steps x
10 x 10), so reading any step of a global map decodes every inner chunk of the block. Steps are
therefore grouped by native time chunk and read together (outer indexing on time, so only the
wanted steps of the virtual store are read), in lon slabs one virtual chunk wide so that memory
stays bounded and every chunk of either store is decoded about once per group. Groups hold at most
IMERG_COMPARE_READ_MB (default 256) MB of one slab of one store. The work is spread over
IMERG_COMPARE_WORKERS processes (default: the core count). IMERG_COMPARE_ZARR_PIPELINE=fused reads
with zarr's FusedCodecPipeline (about 2.5x faster on sharded arrays) instead of zarr's default.
"""

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
import warnings

import icechunk as ic
import numpy as np
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype

VARIABLES = [
    "precipitation",
    "randomError",
    "probabilityLiquidPrecipitation",
    "precipitationQualityIndex",
]
# Encoding keys that describe the storage layout, not the values.
LAYOUT_KEYS = {
    "chunks",
    "preferred_chunks",
    "compressors",
    "compressor",
    "filters",
    "shards",
    "serializer",
}


class Failure(Exception):
    pass


def check(cond: bool, msg) -> None:
    if not cond:
        raise Failure(msg() if callable(msg) else msg)


def configure_zarr() -> None:
    if os.environ.get("IMERG_COMPARE_ZARR_PIPELINE") == "fused":
        zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.FusedCodecPipeline"})


# ---- opening -------------------------------------------------------------------------------------


def virtual_session(expect: dict):
    creds = ic.containers_credentials(
        {expect["container"]: ic.Credentials.LocalFileSystemAccess()}
    )
    repo = ic.Repository.open(
        ic.local_filesystem_storage(expect["virtual_repo"]), authorize_virtual_chunk_access=creds
    )
    if expect.get("virtual_snapshot"):
        return repo.readonly_session(snapshot_id=expect["virtual_snapshot"])
    return repo.readonly_session("main")


def native_session(expect: dict):
    repo = ic.Repository.open(ic.local_filesystem_storage(expect["native_repo"]))
    if expect.get("native_snapshot"):
        return repo.readonly_session(snapshot_id=expect["native_snapshot"])
    return repo.readonly_session("main")


def open_ds(session, which: str, raw: bool = False) -> xr.Dataset:
    """The store as a user opens it (raw: without masking), asserting that nothing warns."""
    kwargs = {"mask_and_scale": False} if raw else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(
            session.store, consolidated=False, zarr_format=3, chunks=None, **kwargs
        )
    check(
        not caught,
        lambda: f"{which}: open_zarr{' (raw)' if raw else ''} warned: "
        f"{[str(w.message) for w in caught]}",
    )
    return ds


# ---- comparing metadata --------------------------------------------------------------------------


def canon(x):
    """A comparable form of attribute/encoding values: numpy scalars and arrays by dtype and bytes
    (so NaN equals NaN and float32 differs from float64), containers recursively."""
    if isinstance(x, dict):
        return {"__dict__": sorted((str(k), repr(canon(v))) for k, v in x.items())}
    if isinstance(x, (list, tuple)):
        return [canon(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.asarray(x)
        return ("np", a.dtype.str, a.shape, a.tobytes())
    if isinstance(x, float):
        return ("float", np.float64(x).tobytes())
    return x


def diff_dicts(a: dict, b: dict) -> list:
    keys = sorted(set(a) | set(b), key=str)
    return [
        (k, a.get(k, "<missing>"), b.get(k, "<missing>"))
        for k in keys
        if k not in a or k not in b or canon(a[k]) != canon(b[k])
    ]


def compare_structure(v: xr.Dataset, n: xr.Dataset, vr: xr.Dataset, nr: xr.Dataset) -> None:
    check(dict(v.sizes) == dict(n.sizes), lambda: f"sizes: virtual {dict(v.sizes)}, native {dict(n.sizes)}")
    check(
        sorted(v.data_vars) == sorted(n.data_vars),
        lambda: f"variables: virtual {sorted(v.data_vars)}, native {sorted(n.data_vars)}",
    )
    check(
        sorted(v.coords) == sorted(n.coords),
        lambda: f"coordinates: virtual {sorted(v.coords)}, native {sorted(n.coords)}",
    )
    for name in VARIABLES:
        check(name in v.data_vars, f"the virtual store has no {name}")
    for a, b, mode in [(v, n, "decoded"), (vr, nr, "raw")]:
        for name in a.variables:
            check(
                a[name].dims == b[name].dims,
                lambda: f"{name} dims: virtual {a[name].dims}, native {b[name].dims}",
            )
            check(
                a[name].dtype == b[name].dtype,
                lambda: f"{name} dtype ({mode}): virtual {a[name].dtype}, native {b[name].dtype}",
            )
    print(
        "sizes, dims, variables, coordinates and dtypes equal:",
        dict(v.sizes),
        {k: str(v[k].dtype) for k in VARIABLES},
    )


def compare_attrs(v: xr.Dataset, n: xr.Dataset, vr: xr.Dataset, nr: xr.Dataset) -> None:
    d = diff_dicts(v.attrs, n.attrs)
    check(not d, lambda: f"root attributes differ (key, virtual, native): {d}")
    for a, b, mode in [(v, n, "decoded"), (vr, nr, "raw")]:
        for name in a.variables:
            d = diff_dicts(a[name].attrs, b[name].attrs)
            check(not d, lambda: f"{name} attributes ({mode}) differ (key, virtual, native): {d}")
    print(f"attributes equal: root ({len(v.attrs)} keys) and {len(v.variables)} variables")
    for a, b, mode in [(v, n, "decoded"), (vr, nr, "raw")]:
        for name in a.variables:
            ea = {k: x for k, x in a[name].encoding.items() if k not in LAYOUT_KEYS}
            eb = {k: x for k, x in b[name].encoding.items() if k not in LAYOUT_KEYS}
            d = diff_dicts(ea, eb)
            check(not d, lambda: f"{name} encoding ({mode}) differs (key, virtual, native): {d}")
    print(
        "encodings equal minus layout keys, e.g. precipitation:",
        {k: x for k, x in v["precipitation"].encoding.items() if k not in LAYOUT_KEYS},
    )
    e = n["precipitation"].encoding
    print(
        "native layout: chunks",
        e.get("chunks"),
        "shards",
        e.get("shards"),
        "compressors",
        e.get("compressors"),
    )


async def _chunk_keys(store, name: str) -> list:
    return sorted([k async for k in store.list_prefix(name) if not k.endswith("zarr.json")])


def compare_zarr(vs, ns) -> int:
    """zarr metadata (coordinates verbatim, data variables minus chunk_grid/codecs) and the bytes of
    every coordinate chunk. Returns the number of chunks compared."""
    vg = zarr.open_group(vs, mode="r", zarr_format=3)
    ng = zarr.open_group(ns, mode="r", zarr_format=3)
    d = diff_dicts(dict(vg.attrs), dict(ng.attrs))
    check(not d, lambda: f"root group attributes differ: {d}")
    va = {k: a.metadata.to_dict() for k, a in vg.arrays()}
    na = {k: a.metadata.to_dict() for k, a in ng.arrays()}
    check(sorted(va) == sorted(na), lambda: f"arrays: virtual {sorted(va)}, native {sorted(na)}")
    proto = default_buffer_prototype()

    async def coordinate_chunks() -> int:
        count = 0
        for name in sorted(va):
            if name in VARIABLES:
                continue
            vk, nk = await _chunk_keys(vs, name), await _chunk_keys(ns, name)
            check(vk == nk, lambda: f"{name} chunk keys: virtual {vk}, native {nk}")
            for k in vk:
                a, b = await vs.get(k, proto), await ns.get(k, proto)
                check(
                    a is not None and b is not None and a.to_bytes() == b.to_bytes(),
                    f"{k}: chunk bytes differ between the stores",
                )
                count += 1
        return count

    for name in sorted(va):
        a, b = dict(va[name]), dict(na[name])
        if name in VARIABLES:
            for k in ("chunk_grid", "codecs"):
                a.pop(k, None)
                b.pop(k, None)
        d = diff_dicts(a, b)
        check(not d, lambda: f"{name} zarr metadata differs (key, virtual, native): {d}")
    count = asyncio.run(coordinate_chunks())
    print(
        f"zarr metadata equal ({len(va)} arrays; data variables minus chunk_grid/codecs), "
        f"{count} coordinate chunks byte-equal"
    )
    return count


def compare_coordinates(v: xr.Dataset, n: xr.Dataset, vr: xr.Dataset, nr: xr.Dataset) -> None:
    names = [k for k in v.variables if k not in VARIABLES]
    for a, b, mode in [(v, n, "decoded"), (vr, nr, "raw")]:
        for name in names:
            x, y = a[name].values, b[name].values
            eq = np.array_equal(x, y, equal_nan=x.dtype.kind in "fcmM")
            check(eq, lambda: f"coordinate {name} ({mode}) differs between the stores")
    print("coordinates equal:", ", ".join(sorted(names)))


# ---- comparing values ----------------------------------------------------------------------------


def default_steps(present: np.ndarray) -> list:
    idx = np.flatnonzero(present)
    check(idx.size > 0, "the virtual store holds no granule (granule_present is all 0)")
    return list(range(int(idx[0]), int(idx[-1]) + 1))


def native_time_chunk(ds: xr.Dataset, name: str) -> int:
    e = ds[name].encoding
    return int((e.get("shards") or e.get("chunks") or (1,))[0])


def plan(steps: list, v: xr.Dataset, n: xr.Dataset, budget_mb: int) -> list:
    """Tasks (variable, steps of one native time chunk, lon slab). Slabs are one virtual chunk
    wide; a task holds at most budget_mb MB of one store's slab."""
    tasks = []
    n_lon, n_lat = v.sizes["lon"], v.sizes["lat"]
    for name in VARIABLES:
        block = native_time_chunk(n, name)
        width = int((v[name].encoding.get("chunks") or (1, n_lon))[1])
        per_step = width * n_lat * 4
        cap = max(1, budget_mb * 2**20 // per_step)
        groups: dict = {}
        for s in steps:
            groups.setdefault(s // block, []).append(s)
        for g in groups.values():
            for k in range(0, len(g), cap):
                part = g[k : k + cap]
                for lon0 in range(0, n_lon, width):
                    tasks.append((name, part, lon0, min(n_lon, lon0 + width)))
    return tasks


_worker: dict = {}


def _init(expect: dict) -> None:
    configure_zarr()
    warnings.simplefilter("ignore")
    vs, ns = virtual_session(expect), native_session(expect)
    _worker["v"] = open_ds(vs, "virtual")
    _worker["n"] = open_ds(ns, "native")
    _worker["vr"] = open_ds(vs, "virtual", raw=True)
    _worker["nr"] = open_ds(ns, "native", raw=True)
    _worker["present"] = _worker["v"]["granule_present"].values


def _first_difference(x: np.ndarray, y: np.ndarray, eq: np.ndarray, steps, lon0: int) -> str:
    bad = np.argwhere(~eq)
    t, i, j = (int(c) for c in bad[0])
    return (
        f"{int(bad.shape[0])} values differ; first at step {steps[t]}, lon index {lon0 + i}, "
        f"lat index {j}: virtual {x[t, i, j]!r}, native {y[t, i, j]!r}"
    )


def decode(raw: xr.DataArray, values: np.ndarray) -> np.ndarray:
    """xarray's CF decoding (the decoder open_zarr applies: fill value to NaN, int16 to float32) of
    raw values, with the attributes of the store they were read from."""
    var = xr.Variable(raw.dims, values, attrs=dict(raw.attrs), encoding=dict(raw.encoding))
    return np.asarray(xr.conventions.decode_cf_variable(raw.name, var).values)


def compare_task(task) -> tuple:
    """Compares one variable over some steps of one native time chunk and one lon slab. Returns
    (None, n) or (message, 0) on the first difference."""
    name, steps, lon0, lon1 = task
    sel = {"time": np.asarray(steps), "lon": slice(lon0, lon1)}
    where = f"{name} steps {steps[0]}..{steps[-1]} lon {lon0}:{lon1}"
    vr, nr = _worker["vr"][name].isel(sel), _worker["nr"][name].isel(sel)
    x, y = vr.values, nr.values
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{where}: raw shapes/dtypes {x.shape} {x.dtype} vs {y.shape} {y.dtype}", 0
    u = np.dtype(f"u{x.dtype.itemsize}")
    if not np.array_equal(x.view(u), y.view(u)):
        return f"{where} (raw bits): " + _first_difference(x, y, x.view(u) == y.view(u), steps, lon0), 0
    if os.environ.get("IMERG_COMPARE_DECODED_READ") == "1":
        # A second read of both stores through the decoded datasets.
        x, y = _worker["v"][name].isel(sel).values, _worker["n"][name].isel(sel).values
    else:
        x, y = decode(vr, x), decode(nr, y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{where}: decoded shapes/dtypes {x.shape} {x.dtype} vs {y.shape} {y.dtype}", 0
    if not np.array_equal(x, y, equal_nan=True):
        eq = (x == y) | (np.isnan(x) & np.isnan(y))
        return f"{where} (decoded): " + _first_difference(x, y, eq, steps, lon0), 0
    for k in [k for k, s in enumerate(steps) if _worker["present"][s] == 0]:
        for arr, which in ((x, "virtual"), (y, "native")):
            if not np.isnan(arr[k]).all():
                return f"{name} gap step {steps[k]} is not all NaN in the {which} store", 0
    return None, len(steps)


def compare_values(expect: dict, steps: list, tasks: list) -> None:
    workers = max(1, min(int(os.environ.get("IMERG_COMPARE_WORKERS", os.cpu_count() or 1)), 8))
    workers = min(workers, len(tasks))
    t0 = time.perf_counter()
    if workers == 1:
        _init(expect)
        results = map(compare_task, tasks)
        pool = None
    else:
        # "spawn": icechunk's runtime threads do not survive a fork.
        ctx = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init, initargs=(expect,)
        )
        results = pool.map(compare_task, tasks)
    try:
        for msg, _ in results:
            if msg:
                raise Failure(msg)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    print(
        f"values equal, raw bit for bit and decoded with NaN == NaN, for {len(steps)} steps "
        f"x {len(VARIABLES)} variables in {len(tasks)} reads, {workers} process(es), "
        f"{time.perf_counter() - t0:.1f} s"
    )


def main() -> None:
    expect = json.load(open(sys.argv[1]))
    configure_zarr()
    vs, ns = virtual_session(expect), native_session(expect)
    v, n = open_ds(vs, "virtual"), open_ds(ns, "native")
    vr, nr = open_ds(vs, "virtual", raw=True), open_ds(ns, "native", raw=True)
    print(
        f"opened both stores without warnings (virtual snapshot {vs.snapshot_id}, "
        f"native snapshot {ns.snapshot_id})"
    )

    compare_structure(v, n, vr, nr)
    compare_attrs(v, n, vr, nr)
    compare_zarr(vs.store, ns.store)
    compare_coordinates(v, n, vr, nr)

    present = v["granule_present"].values
    steps = sorted(set(int(s) for s in expect["steps"])) if expect.get("steps") else default_steps(present)
    check(
        all(0 <= s < v.sizes["time"] for s in steps),
        lambda: f"steps outside 0..{v.sizes['time']}: {[s for s in steps if not 0 <= s < v.sizes['time']]}",
    )
    gaps = [s for s in steps if present[s] == 0]
    budget = int(os.environ.get("IMERG_COMPARE_READ_MB", "256"))
    compare_values(expect, steps, plan(steps, v, n, budget))
    print(f"gaps NaN in both: {len(gaps)} step(s) {gaps[:20]}{' ...' if len(gaps) > 20 else ''}")
    print(json.dumps({"compared_steps": len(steps), "variables": len(VARIABLES), "ok": True}))


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
