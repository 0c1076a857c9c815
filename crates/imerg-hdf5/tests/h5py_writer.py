"""Writes IMERG-like HDF5 files with h5py (a writer other than hdf5-metno) and prints, as JSON,
what h5py/libhdf5 report for every dataset: shape, dtype, chunk shape, filters and the chunk table
(dataset.id.get_chunk_info). Usage: h5py_writer.py OUT.h5 LIBVER [TIME [SEED]]
(LIBVER: earliest | v110 | latest; TIME: the granule's start in seconds after the GPS epoch,
default 675000000; SEED: the random fields' seed, default 7)."""
import json
import sys

import h5py
import numpy as np

out, libver = sys.argv[1], sys.argv[2]
bounds = "earliest" if libver == "earliest" else (libver, libver) if libver == "v110" else "latest"
t0 = int(sys.argv[3]) if len(sys.argv) > 3 else 675000000
rng = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else 7)
lon = np.linspace(-179.95, 179.95, 3600, dtype=np.float32)
lat = np.linspace(-89.95, 89.95, 1800, dtype=np.float32)


def field(scale):
    base = np.outer(np.sin(np.radians(lon)) + 1.0, np.cos(np.radians(lat))).astype(np.float32)
    # Like IMERG: mostly no rain (zeros), a band of missing values, rain in patches.
    u = rng.random(size=(3600, 1800))
    rain = np.round(base * rng.gamma(0.5, scale, size=(3600, 1800)), 2).astype(np.float32)
    v = np.where(u < 0.12, rain, np.float32(0.0))
    v[:, :150] = -9999.9
    v[:, -150:] = -9999.9
    return v.astype(np.float32)[None, :, :]


with h5py.File(out, "w", libver=bounds) as f:
    f.attrs["FileHeader"] = "DOI=10.5067/GPM/IMERG/3B-HH/07;\nAlgorithmID=3IMERGHH;\n"
    g = f.create_group("Grid")
    g.create_group("Intermediate")
    for name, scale in [("precipitation", 2.0), ("randomError", 1.0), ("precipitationQualityIndex", 0.5)]:
        d = g.create_dataset(name, data=field(scale), chunks=(1, 145, 1800), maxshape=(None, 3600, 1800),
                             compression="gzip", compression_opts=1, shuffle=True, fillvalue=np.float32(-9999.9))
        d.attrs["_FillValue"] = np.float32(-9999.9)
        d.attrs["CodeMissingValue"] = "-9999.9"
        d.attrs["units"] = "mm/hr"
    pl = (np.clip(field(1.0), 0, 100)).astype(np.int16)
    d = g.create_dataset("probabilityLiquidPrecipitation", data=pl, chunks=(1, 291, 1800), maxshape=(None, 3600, 1800),
                         compression="gzip", compression_opts=1, shuffle=True, fillvalue=np.int16(-9999))
    d.attrs["_FillValue"] = np.int16(-9999)
    d.attrs["CodeMissingValue"] = "-9999"
    g.create_dataset("lon", data=lon, chunks=(3600,))
    g.create_dataset("lat", data=lat, chunks=(1800,))
    g.create_dataset("lon_bnds", data=np.stack([lon - 0.05, lon + 0.05], 1), chunks=(3600, 2))
    g.create_dataset("lat_bnds", data=np.stack([lat - 0.05, lat + 0.05], 1), chunks=(1800, 2))
    t = g.create_dataset("time", data=np.array([t0], np.int32), chunks=(32,), maxshape=(None,))
    t.attrs["units"] = "seconds since 1980-01-06 00:00:00 UTC"
    t.attrs["calendar"] = "julian"
    g.create_dataset("time_bnds", data=np.array([[t0, t0 + 1800]], np.int32), chunks=(32, 2), maxshape=(None, 2))
    for dim in ["nv", "lonv", "latv"]:
        g.create_dataset(dim, shape=(2,), dtype=np.int32)
    # Index types beyond IMERG's.
    x = f.create_group("extra")
    x.create_dataset("btree2", data=np.arange(2 * 580 * 1800, dtype=np.float32).reshape(2, 580, 1800),
                     chunks=(1, 145, 1800), maxshape=(None, None, 1800), compression="gzip", shuffle=True)
    x.create_dataset("single", data=np.arange(100, dtype=np.float64).reshape(10, 10), chunks=(10, 10), compression="gzip")
    x.create_dataset("unfiltered", data=np.arange(4000, dtype=np.int32).reshape(40, 100), chunks=(10, 25))
    x.create_dataset("paged_fixed", data=np.arange(3000, dtype=np.int16).reshape(3000, 1), chunks=(1, 1), compression="gzip")
    x.create_dataset("ea_blocks", data=np.arange(5000, dtype=np.int32), chunks=(1,), maxshape=(None,), compression="gzip")
    x.create_dataset("contiguous", data=np.arange(1000, dtype=np.float32))
    x.create_dataset("compact_like", data=np.arange(4, dtype=np.int8))
    many = x.create_dataset("many_attrs", data=np.zeros((4, 4), np.float32), chunks=(2, 2))
    for i in range(20):
        many.attrs[f"a{i:02d}"] = f"value {i}"
    # Implicit index (v110+): early allocation, no filters.
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((4, 4))
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    space = h5py.h5s.create_simple((8, 12))
    h5py.h5d.create(x.id, b"implicit", h5py.h5t.NATIVE_INT32, space, dcpl=dcpl)

report = {}
with h5py.File(out, "r") as f:
    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        plist = obj.id.get_create_plist()
        filters = []
        for i in range(plist.get_nfilters()):
            code, flags, values, _name = plist.get_filter(i)
            filters.append([int(code), [int(v) for v in values]])
        chunks = []
        if obj.chunks is not None:
            for i in range(obj.id.get_num_chunks()):
                ci = obj.id.get_chunk_info(i)
                chunks.append([[int(o) for o in ci.chunk_offset], int(ci.byte_offset), int(ci.size), int(ci.filter_mask)])
        report["/" + name] = {
            "shape": [int(s) for s in obj.shape],
            "dtype": obj.dtype.str,
            "chunks": list(obj.chunks) if obj.chunks else None,
            "filters": filters,
            "chunk_info": chunks,
        }
    f.visititems(visit)
    report["_hdf5_version"] = h5py.version.hdf5_version
print(json.dumps(report))
