"""Builds two full-record stores (time axis of the whole Final record, 486480 half-hourly steps)
whose chunk grids span everything but whose chunk contents exist only along the read path of a
point benchmark, for read_bench.py --cases point-year,point-record:

- OUT/native: the native layout (shards of 2880 x 180 x 180, inner chunks 2880 x 10 x 10, zstd 3,
  crc32c shard index at the end). For `precipitation`, the shard holding the point is written
  for every time block (169 shards; the other 199 shards of each block are absent), filled with
  precipitation-like values (88% zeros, else lognormal rounded to 0.01, float32). A few distinct
  shards are encoded once with zarr-python and their bytes reused across blocks.
- OUT/virtual: the virtual layout copied from the template (chunks 1 x 145 x 1800, the template's
  codec list: bytes + numcodecs.zlib level 6), with one virtual reference per time step for the
  `precipitation` chunk holding the point, pointing at byte ranges of a few local files
  (OUT/chunks/*.bin) of zlib-compressed 145 x 1800 float32 chunks; the repository has a virtual
  chunk container for file://OUT/chunks/ and the template's manifest splitting. With
  --virtual-refs all, every one of the 25 lon chunks of every step gets a reference (to the same
  bytes), so the precipitation manifests have the real store's size (12.2 M references).

Both stores copy the template's root attributes, coordinate metadata and lat/lon/bounds chunks;
time, time_bnds and granule_present (all 1) are written for the full length, time being the
product's first granule (root attribute imerg_product.first_granule) in the template's units
(seconds since the GPS epoch, no leap seconds: 567648000 for 1998-01-01) plus 1800 s per step.
The other three data variables exist (metadata only, no chunks), so both open like the real ones.

Usage: build_sparse.py --template VIRTUAL_REPO --container URL --out DIR
                       [--lon 1800 --lat 900] [--length 486480] [--virtual-refs point|all]
                       [--batch STEPS] [--stores native,virtual]
Prints the time each part takes and, last, a JSON line with the paths and the container to pass
to read_bench.py (--virtual OUT/virtual --container file://OUT/chunks/ --native OUT/native).
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import time
import zlib

import icechunk as ic
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

DATA_VARS = (
    "precipitation",
    "randomError",
    "probabilityLiquidPrecipitation",
    "precipitationQualityIndex",
)
COPIED = ("lat", "lon", "lat_bnds", "lon_bnds")
REGENERATED = ("time", "time_bnds", "granule_present")
BLOCK, SHARD, TILE = 2880, 180, 10
NATIVE_CODECS = [
    {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [BLOCK, TILE, TILE],
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
            ],
            "index_codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "crc32c"},
            ],
            "index_location": "end",
        },
    }
]
PAYLOADS = 4  # distinct native shards, reused across blocks
CHUNK_FILES, CHUNKS_PER_FILE = 4, 96  # distinct virtual chunks: 384
PROTO = default_buffer_prototype()


def rain(rng, shape) -> np.ndarray:
    """Precipitation-like float32: 88% zeros, else lognormal (median 0.6 mm/hr) to 0.01."""
    n = int(np.prod(shape))
    a = np.zeros(n, np.float32)
    wet = rng.random(n, dtype=np.float32) < 0.12
    a[wet] = np.round(rng.lognormal(-0.5, 1.2, int(wet.sum())), 2)
    return a.reshape(shape)


def log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)


class Template:
    """What the stores copy from the real virtual store."""

    def __init__(self, repo_dir: str, container: str):
        creds = ic.containers_credentials({container: ic.Credentials.LocalFileSystemAccess()})
        repo = ic.Repository.open(
            ic.local_filesystem_storage(repo_dir), authorize_virtual_chunk_access=creds
        )
        self.config = repo.config
        self.store = repo.readonly_session("main").store
        group = zarr.open_group(self.store, mode="r", zarr_format=3)
        self.root = group.metadata.to_dict()
        self.arrays = {name: a.metadata.to_dict() for name, a in group.arrays()}
        self.time0 = int(zarr.open_array(self.store, path="time", mode="r")[0])
        self.chunks = asyncio.run(self._copied_chunks())

    async def _copied_chunks(self) -> dict:
        out = {}
        for name in COPIED:
            async for k in self.store.list_prefix(name):
                if not k.endswith("zarr.json"):
                    out[k] = (await self.store.get(k, PROTO)).to_bytes()
        return out


def product(tpl) -> dict:
    """The root attribute imerg_product: JSON text (an object in stores written before CF-1.10)."""
    p = tpl.root["attributes"]["imerg_product"]
    return json.loads(p) if isinstance(p, str) else p


def first_step_seconds(tpl: Template) -> int:
    """The product's first granule in the time units (seconds since the GPS epoch, no leap
    seconds, as the ingest writes them)."""
    units = tpl.arrays["time"]["attributes"]["units"]
    m = re.match(r"seconds since (\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)", units)
    epoch = dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}+00:00")
    first = dt.datetime.fromisoformat(
        product(tpl)["first_granule"].replace("Z", "+00:00")
    )
    return int((first - epoch).total_seconds())


async def write_metadata(store, tpl: Template, length: int, native: bool) -> None:
    await store.set("zarr.json", PROTO.buffer.from_bytes(json.dumps(tpl.root).encode()))
    for name, meta in tpl.arrays.items():
        m = json.loads(json.dumps(meta))
        if name in DATA_VARS or name in REGENERATED:
            m["shape"][0] = length
        if native and name in DATA_VARS:
            m["chunk_grid"] = {
                "name": "regular",
                "configuration": {"chunk_shape": [BLOCK, SHARD, SHARD]},
            }
            m["codecs"] = NATIVE_CODECS
        await store.set(f"{name}/zarr.json", PROTO.buffer.from_bytes(json.dumps(m).encode()))
    for k, b in tpl.chunks.items():
        await store.set(k, PROTO.buffer.from_bytes(b))


def write_coordinates(store, tpl: Template, length: int, cadence_s: int) -> None:
    t = tpl.time0 + cadence_s * np.arange(length, dtype=np.int64)
    zarr.open_array(store, path="time", mode="r+")[:] = t
    zarr.open_array(store, path="time_bnds", mode="r+")[:] = np.stack([t, t + cadence_s], axis=1)
    zarr.open_array(store, path="granule_present", mode="r+")[:] = np.ones(length, np.uint8)


def native_payloads(tpl: Template, rng) -> list:
    """Shard bytes (2880 x 180 x 180) encoded by zarr-python with the native codecs."""
    mem = zarr.storage.MemoryStore()
    m = json.loads(json.dumps(tpl.arrays["precipitation"]))
    m["shape"] = [BLOCK, SHARD, SHARD]
    m["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": [BLOCK, SHARD, SHARD]}}
    m["codecs"] = NATIVE_CODECS
    asyncio.run(mem.set("x/zarr.json", PROTO.buffer.from_bytes(json.dumps(m).encode())))
    asyncio.run(mem.set("zarr.json", PROTO.buffer.from_bytes(b'{"zarr_format":3,"node_type":"group"}')))
    arr = zarr.open_array(mem, path="x", mode="r+")
    out = []
    for _ in range(PAYLOADS):
        arr[:] = rain(rng, (BLOCK, SHARD, SHARD))
        out.append(asyncio.run(mem.get("x/c/0/0/0", PROTO)).to_bytes())
    return out


def build_native(path: str, tpl: Template, a, rng, t0: float) -> dict:
    repo = ic.Repository.create(ic.local_filesystem_storage(path))
    session = repo.writable_session("main")
    store = session.store
    asyncio.run(write_metadata(store, tpl, a.length, native=True))
    write_coordinates(store, tpl, a.length, a.cadence_s)
    payloads = native_payloads(tpl, rng)
    log(t0, f"native: {PAYLOADS} shards encoded, {sum(map(len, payloads)) / PAYLOADS / 1e6:.1f} MB each")
    blocks = -(-a.length // BLOCK)
    key = "precipitation/c/{}/%d/%d" % (a.lon // SHARD, a.lat // SHARD)

    async def put():
        for b in range(blocks):
            await store.set(key.format(b), PROTO.buffer.from_bytes(payloads[b % PAYLOADS]))

    asyncio.run(put())
    snap = session.commit(f"sparse native: {blocks} shards of precipitation at lon {a.lon} lat {a.lat}")
    log(t0, f"native: {blocks} shards written and committed ({snap})")
    return {"shards": blocks, "shard_bytes_mean": sum(map(len, payloads)) / PAYLOADS}


def write_chunk_files(directory: str, tpl: Template, rng) -> tuple[list, np.ndarray, np.ndarray]:
    """Local files of zlib-compressed 145 x 1800 float32 chunks; their URLs, offsets, lengths."""
    meta = tpl.arrays["precipitation"]
    shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"][1:])
    level = next(c["configuration"]["level"] for c in meta["codecs"] if "zlib" in c["name"])
    os.makedirs(directory, exist_ok=True)
    urls, offsets, lengths = [], [], []
    for f in range(CHUNK_FILES):
        path = os.path.join(directory, f"chunks-{f}.bin")
        off = 0
        with open(path, "wb") as fh:
            for _ in range(CHUNKS_PER_FILE):
                b = zlib.compress(rain(rng, shape).astype("<f4").tobytes(), level)
                fh.write(b)
                urls.append(f"file://{os.path.abspath(path)}")
                offsets.append(off)
                lengths.append(len(b))
                off += len(b)
    return urls, np.array(offsets, np.uint64), np.array(lengths, np.uint64)


def build_virtual(path: str, chunk_dir: str, tpl: Template, a, rng, t0: float) -> dict:
    prefix = f"file://{os.path.abspath(chunk_dir)}/"
    config = ic.RepositoryConfig.default()
    config.set_virtual_chunk_container(ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(chunk_dir)))
    config.manifest = tpl.config.manifest  # the ingest's splitting along time
    creds = ic.containers_credentials({prefix: ic.Credentials.LocalFileSystemAccess()})
    repo = ic.Repository.create(
        ic.local_filesystem_storage(path), config=config, authorize_virtual_chunk_access=creds
    )
    session = repo.writable_session("main")
    asyncio.run(write_metadata(session.store, tpl, a.length, native=False))
    write_coordinates(session.store, tpl, a.length, a.cadence_s)
    session.commit("sparse virtual: metadata and coordinates")
    urls, offs, lens = write_chunk_files(chunk_dir, tpl, rng)
    log(t0, f"virtual: {len(urls)} chunks written to {chunk_dir}, {lens.mean() / 1e3:.0f} kB each")
    chunk_lon = tpl.arrays["precipitation"]["chunk_grid"]["configuration"]["chunk_shape"][1]
    n_lon_chunks = -(-tpl.arrays["precipitation"]["shape"][1] // chunk_lon)
    lon_chunks = range(n_lon_chunks) if a.virtual_refs == "all" else [a.lon // chunk_lon]
    refs = 0
    for start in range(0, a.length, a.batch):
        n = min(a.batch, a.length - start)
        pick = (np.arange(start, start + n)[:, None] + np.arange(len(lon_chunks))[None, :]) % len(urls)
        pick = pick.ravel()
        session = repo.writable_session("main")
        session.store.set_virtual_refs_arr(
            "precipitation",
            (n, len(lon_chunks), 1),
            [urls[i] for i in pick],
            offs[pick],
            lens[pick],
            arr_offset=(start, lon_chunks[0], 0),
        )
        session.commit(f"sparse virtual: steps {start}..{start + n}")
        refs += len(pick)
        log(t0, f"virtual: {refs} references committed")
    return {"refs": refs, "chunk_files": CHUNK_FILES, "container": prefix}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", required=True, help="a virtual store written by imerg-ingest")
    p.add_argument("--container", required=True, help="the template's virtual chunk container")
    p.add_argument("--out", required=True)
    p.add_argument("--lon", type=int, default=1800)
    p.add_argument("--lat", type=int, default=900)
    p.add_argument("--length", type=int, default=486480)
    p.add_argument("--virtual-refs", choices=["point", "all"], default="point")
    p.add_argument("--batch", type=int, default=0, help="steps per virtual commit (default: all)")
    p.add_argument("--seed", type=int, default=1998)
    p.add_argument("--stores", default="native,virtual", help="which to build (default both)")
    a = p.parse_args()
    a.batch = a.batch or a.length
    t0 = time.perf_counter()
    tpl = Template(a.template, a.container)
    a.cadence_s = int(product(tpl)["cadence_minutes"]) * 60
    first = first_step_seconds(tpl)
    if first != tpl.time0:
        raise SystemExit(f"time[0] of the template is {tpl.time0}, the first granule gives {first}")
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    rng = np.random.default_rng(a.seed)
    log(t0, f"template read: time[0] = {first} s, {len(tpl.arrays)} arrays")
    stores = a.stores.split(",")
    nat = {"shards": 0, "shard_bytes_mean": 0}
    if "native" in stores:
        nat = build_native(os.path.join(a.out, "native"), tpl, a, rng, t0)
    t_native = time.perf_counter() - t0
    vir = {"refs": 0, "container": None}
    if "virtual" in stores:
        vir = build_virtual(
            os.path.join(a.out, "virtual"), os.path.join(a.out, "chunks"), tpl, a, rng, t0
        )
    total = time.perf_counter() - t0
    print(json.dumps({
        "native": os.path.abspath(os.path.join(a.out, "native")),
        "virtual": os.path.abspath(os.path.join(a.out, "virtual")),
        "container": vir["container"], "length": a.length, "lon": a.lon, "lat": a.lat,
        "virtual_refs": a.virtual_refs, "refs": vir["refs"], "native_shards": nat["shards"],
        "native_shard_mb": round(nat["shard_bytes_mean"] / 1e6, 2),
        "native_s": round(t_native, 1), "virtual_s": round(total - t_native, 1),
        "total_s": round(total, 1),
    }))


if __name__ == "__main__":
    main()
