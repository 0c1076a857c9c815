"""Checks tests/python/hostile_granules.py: every variant is made, has its one hostile change (as
h5py sees it) and is otherwise the good granule.

Usage: test_hostile_granules.py [GOOD.HDF5]

Without GOOD.HDF5 it writes one with `$IMERG_INGEST_BIN synth` (IMERG_INGEST_BIN: path of the
imerg-ingest binary). Writes the variants to a temporary directory, prints one line per variant
and exits non-zero on the first failure. Takes a few seconds (inflating the deflate bomb's 1 GiB
is most of it). Needs h5py and numpy.
"""

import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import hostile_granules  # noqa: E402

TMP = None
EXPECTED = [
    "huge_time",
    "external_time",
    "external_link_grid",
    "soft_link_lon",
    "vds_lon",
    "lon_deflate_bomb",
    "chunk_index_out_of_range",
    "chunk_index_duplicated",
    "chunk_index_misaligned",
    "time_far_future",
    "huge_attribute",
    "wide_attribute",
]


def fail(msg):
    print(f"FAIL {msg} (files kept in {TMP})")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def attrs_of(obj):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}


def same_as_good(good, f, skip_values=(), skip_attrs=()):
    """Every dataset of good's Grid (outside Intermediate) reads the same in f, values and
    attributes, except the ones named in skip_values / skip_attrs; root attributes too."""
    check(attrs_of(good) == attrs_of(f), "root attributes changed")
    for name, obj in good["Grid"].items():
        if not isinstance(obj, h5py.Dataset):
            continue
        other = f["Grid"][name]
        if name not in skip_values:
            check(np.array_equal(obj[()], other[()]), f"Grid/{name}: values changed")
        if name not in skip_attrs:
            check(attrs_of(obj) == attrs_of(other), f"Grid/{name}: attributes changed")


def chunk_offsets(path, name="Grid/precipitation"):
    with h5py.File(path, "r") as f:
        d = f[name]
        return {d.id.get_chunk_info(i).byte_offset: tuple(d.id.get_chunk_info(i).chunk_offset)
                for i in range(d.id.get_num_chunks())}


def main(argv):
    global TMP
    tmp = TMP = tempfile.mkdtemp(prefix="hostile-granules-test-")
    if len(argv) > 1:
        good_path = argv[1]
    else:
        binary = os.environ.get("IMERG_INGEST_BIN")
        if not binary:
            fail("give GOOD.HDF5 or set IMERG_INGEST_BIN")
        subprocess.run([binary, "synth", "--out", os.path.join(tmp, "good"),
                        "--start", "2024-04-01T00:00", "--end", "2024-04-01T00:30"],
                       check=True, stdout=subprocess.DEVNULL)
        good_path = glob.glob(os.path.join(tmp, "good", "**", "*.HDF5"), recursive=True)[0]
    out = os.path.join(tmp, "out")
    script = os.path.join(HERE, "hostile_granules.py")
    run = subprocess.run([sys.executable, script, good_path, out], capture_output=True, text=True)
    check(run.returncode == 0, f"hostile_granules.py exited {run.returncode}: {run.stderr}")
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    check([v["variant"] for v in lines] == EXPECTED, f"variants: {[v['variant'] for v in lines]}")
    name = os.path.basename(good_path)
    paths = {}
    for v in lines:
        check(set(v) == {"variant", "path", "what"}, f"{v['variant']}: keys {sorted(v)}")
        want = os.path.join(out, v["variant"], name)
        check(v["path"] == want, f"{v['variant']}: path {v['path']}")
        check(os.path.isfile(v["path"]), f"{v['variant']}: no file")
        check(v["what"] and "\n" not in v["what"], f"{v['variant']}: description")
        paths[v["variant"]] = v["path"]

    good = h5py.File(good_path, "r")
    good_chunks = chunk_offsets(good_path)
    hostname = open("/etc/hostname", "rb").read()
    ok = []

    with h5py.File(paths["huge_time"], "r") as f:
        t = f["Grid/time"]
        check(t.shape == (2**40,) and t.chunks == (1024,) and t.dtype == np.int32,
              "huge_time: layout")
        check(t.id.get_num_chunks() == 0, "huge_time: a chunk is written")
        check(attrs_of(t) == attrs_of(good["Grid/time"]), "huge_time: attributes")
        same_as_good(good, f, skip_values={"time"})
    ok.append("huge_time")

    with h5py.File(paths["external_time"], "r") as f:
        t = f["Grid/time"]
        check(t.external == [("/etc/hostname", 0, 8)], f"external_time: {t.external}")
        want = int.from_bytes(hostname[:4].ljust(4, b"\0"), "little")
        check(int(t[0]) == want, "external_time: libhdf5 does not read /etc/hostname")
        check(attrs_of(t) == attrs_of(good["Grid/time"]), "external_time: attributes")
        same_as_good(good, f, skip_values={"time"})
    ok.append("external_time")

    with h5py.File(paths["external_link_grid"], "r") as f:
        link = f.get("Grid", getlink=True)
        target = os.path.join(out, "external_link_grid", "external_link_target.h5")
        check(isinstance(link, h5py.ExternalLink) and link.filename == target,
              "external_link_grid: link")
        same_as_good(good, f)  # through the link: the other file holds the same Grid
    check(os.path.getsize(paths["external_link_grid"]) >= os.path.getsize(target),
          "external_link_grid: granule smaller than the target")
    ok.append("external_link_grid")

    with h5py.File(paths["soft_link_lon"], "r") as f:
        link = f["Grid"].get("lon", getlink=True)
        check(isinstance(link, h5py.SoftLink) and link.path == "/Grid/Intermediate/lon",
              "soft_link_lon: link")
        same_as_good(good, f)
    ok.append("soft_link_lon")

    with h5py.File(paths["vds_lon"], "r") as f:
        lon = f["Grid/lon"]
        check(lon.is_virtual, "vds_lon: not virtual")
        check(lon.virtual_sources()[0].file_name == os.path.join(out, "vds_lon", "vds_source.h5"),
              "vds_lon: source file")
        same_as_good(good, f)
    ok.append("vds_lon")

    with h5py.File(paths["lon_deflate_bomb"], "r") as f:
        lon = f["Grid/lon"]
        check(lon.compression == "gzip" and lon.chunks == lon.shape, "lon_deflate_bomb: layout")
        mask, raw = lon.id.read_direct_chunk((0,))
        check(mask == 0 and 900_000 < len(raw) < 1_200_000,
              f"lon_deflate_bomb: stored {len(raw)} bytes")
        d, n, buf = zlib.decompressobj(), 0, raw
        while buf:
            n += len(d.decompress(buf, 1 << 24))
            buf = d.unconsumed_tail
        check(d.eof and n == 1 << 30, f"lon_deflate_bomb: inflates to {n} bytes")
        check(attrs_of(lon) == attrs_of(good["Grid/lon"]), "lon_deflate_bomb: attributes")
        same_as_good(good, f, skip_values={"lon"})
    ok.append("lon_deflate_bomb")

    c = good["Grid/precipitation"].chunks[1]
    last = max(good_chunks, key=lambda a: good_chunks[a])
    seen = chunk_offsets(paths["chunk_index_out_of_range"])
    check(seen[last] == (0, 25 * c, 0), f"chunk_index_out_of_range: {seen[last]}")
    others = {a: o for a, o in seen.items() if a != last}
    check(others == {a: o for a, o in good_chunks.items() if a != last},
          "chunk_index_out_of_range: other chunks changed")
    seen = chunk_offsets(paths["chunk_index_duplicated"])
    check(seen[last] == (0, 23 * c, 0) and list(seen.values()).count((0, 23 * c, 0)) == 2,
          f"chunk_index_duplicated: {seen[last]}")
    for v in ("chunk_index_out_of_range", "chunk_index_duplicated", "chunk_index_misaligned"):
        with h5py.File(paths[v], "r") as f:
            same_as_good(good, f, skip_values={"precipitation"})
    # libhdf5 2.0 (h5py's) refuses to list a misaligned key ("bad coordinate offset"): read the
    # B-tree keys from the bytes, at the places the generator finds in the good file
    leaves, rank = hostile_granules.chunk_btree_leaves(good_path, "Grid/precipitation")
    entries = sorted((e for _, es in leaves for e in es), key=lambda e: e[1])
    raw_good = open(good_path, "rb").read()
    raw_mis = open(paths["chunk_index_misaligned"], "rb").read()
    check(len(raw_good) == len(raw_mis), "chunk_index_misaligned: size changed")
    diff = np.flatnonzero(np.frombuffer(raw_good, np.uint8) != np.frombuffer(raw_mis, np.uint8))
    key_pos, offsets, _child = entries[len(entries) // 2]
    patched = struct.unpack_from(f"<{rank + 1}Q", raw_mis, key_pos + 8)
    want = list(offsets)
    want[1] += 1
    check(list(patched) == want and offsets[1] % c == 0,
          f"chunk_index_misaligned: key {patched}, expected {tuple(want)}")
    check(all(key_pos + 8 <= i < key_pos + 8 + 8 * (rank + 1) for i in diff),
          "chunk_index_misaligned: bytes other than the key changed")
    ok += ["chunk_index_out_of_range", "chunk_index_duplicated", "chunk_index_misaligned"]

    with h5py.File(paths["time_far_future"], "r") as f:
        t = f["Grid/time"]
        check(t.dtype == good["Grid/time"].dtype and t.shape == good["Grid/time"].shape,
              "time_far_future: type")
        check(int(t[0]) == np.iinfo(np.int32).max, f"time_far_future: {t[0]}")
        check(t.attrs["units"] == "days since 1980-01-06 00:00:00 UTC", "time_far_future: units")
        rest = {k: v for k, v in attrs_of(t).items() if k != "units"}
        check(rest == {k: v for k, v in attrs_of(good["Grid/time"]).items() if k != "units"},
              "time_far_future: other attributes")
        same_as_good(good, f, skip_values={"time"}, skip_attrs={"time"})
    ok.append("time_far_future")

    with h5py.File(paths["huge_attribute"], "r") as f:
        d = f["Grid/precipitation"]
        try:
            shape = h5py.h5a.open(d.id, b"hostile_huge_attribute").shape
            check(shape == (2**40,), f"huge_attribute: shape {shape}")
        except KeyError as e:  # libhdf5 2.0 checks the claim against the stored bytes
            check("ran off end" in str(e) or "exceeds" in str(e), f"huge_attribute: {e}")
        same_as_good(good, f, skip_attrs={"precipitation"})
    ok.append("huge_attribute")

    with h5py.File(paths["wide_attribute"], "r") as f:
        d = f["Grid/precipitation"]
        w = d.attrs["hostile_wide_attribute"]
        check(w.shape == (1,) and 60_000 < len(w[0]) < 65_536,
              f"wide_attribute: {w.dtype} {w.shape}")
        rest = {k: v for k, v in attrs_of(d).items() if k != "hostile_wide_attribute"}
        check(rest == attrs_of(good["Grid/precipitation"]), "wide_attribute: other attributes")
        same_as_good(good, f, skip_attrs={"precipitation"})
    ok.append("wide_attribute")

    check(ok == EXPECTED, f"checked {ok}")
    for v in lines:
        print(f"ok {v['variant']}: {v['what']}")
    shutil.rmtree(tmp)  # kept when a check fails
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
