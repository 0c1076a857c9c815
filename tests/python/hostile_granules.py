"""Writes hostile variants of a good IMERG granule for the tests of the untrusted-input checks.

Who calls it: the Rust integration tests (and people reproducing a finding by hand). They write a
good granule with `imerg-ingest synth`, run this script on it, then feed each variant to the reader
paths (`virtualize`, `virtualize --ranged-reads`, `inspect --layout`, the service) and assert the
granule is refused cleanly: no crash, no abort, no hang, no huge allocation, no bytes of any file
other than the granule read or reported.

Interface:

    python tests/python/hostile_granules.py GOOD.HDF5 OUTDIR

    Needs h5py (3.x) and numpy. OUTDIR is created if missing; files of an earlier run are
    overwritten. For every variant it writes

        OUTDIR/<variant>/<file name of GOOD.HDF5>

    (the file keeps the good granule's name because the tool checks that the name encodes the
    granule's time; one subdirectory per variant so that every variant can keep it), plus, for the
    variants that point into another file, that companion file in the same subdirectory. It prints
    one JSON line per variant on stdout, in the order below:

        {"variant": NAME, "path": "/abs/OUTDIR/NAME/<file name>", "what": "one-line description"}

    and exits 0, or 1 with a message on stderr as soon as a variant cannot be made (for example
    the chunk_index_* variants of a granule without v1 B-tree chunk indexes; the variants made
    before it are printed), or 2 on bad usage. Nothing else goes to stdout. About 0.3 s for a
    1 MB synthetic granule.

Each variant is a byte copy of GOOD.HDF5 (its data variables, chunking and name-encoded time stay
valid) with exactly one hostile change:

    huge_time                 Grid/time: chunked int32 (2**40,), chunks (1024,), no chunk written
    external_time             Grid/time: HDF5 external storage in /etc/hostname (absolute path)
    external_link_grid        /Grid: external link to /Grid of external_link_target.h5 (beside it)
    soft_link_lon             Grid/lon: soft link to /Grid/Intermediate/lon (the real lon, moved)
    vds_lon                   Grid/lon: virtual dataset mapping lon of vds_source.h5 (next to it)
    lon_deflate_bomb          Grid/lon: one deflate chunk of ~1 MB that inflates to 1 GiB of zeros
    chunk_index_out_of_range  precipitation: last chunk's B-tree key at lon index 25 (of 25 chunks)
    chunk_index_duplicated    precipitation: last chunk's B-tree key equal to the key before it
    chunk_index_misaligned    precipitation: a middle chunk's B-tree key lon offset + 1
    time_far_future           Grid/time: a value beyond chrono's range (int32 max days if int32)
    huge_attribute            precipitation: S16 attribute whose dataspace claims 2**40 elements
    wide_attribute            precipitation: widest S attribute libhdf5 writes (65464 B x 1)

Notes:
  * The chunk_index_* variants are binary patches of the v1 chunk B-tree ("TREE" nodes) and need
    a granule written with v1 B-tree chunk indexes (real IMERG V07, `synth --hdf5-format
    earliest`). The node is found by matching its child addresses with
    `get_chunk_info(i).byte_offset`; after the patch the script re-reads the chunk index with h5py
    and says in "what" what it sees: the patched offset (out_of_range, duplicated), or libhdf5
    2.0's refusal to list the chunks, "bad coordinate offset" (misaligned; older libhdf5 such as
    the 1.10.8 that imerg-ingest links accepts it). Any other offset is an error.
  * huge_attribute: libhdf5 cannot write an attribute that large honestly (in a v1 object
    header, which these granules have, an attribute message is limited to 64 KiB; dense attribute
    storage needs a v2 header), so the script writes a one-element S16 attribute and patches its
    dataspace message to claim 2**40 elements (16 TiB). libhdf5 2.0 (h5py) then refuses to open
    it ("ran off end of input buffer while decoding") and with it every attribute of
    precipitation; the 1.10.8 that imerg-ingest links says "data size exceeds buffer size".
    wide_attribute is the largest attribute libhdf5 writes here honestly and reads back (one
    fixed-length string of about 64 KiB).
  * The external link and the VDS source name their companion file by its absolute path
    (OUTDIR/<variant>/...), so libhdf5 finds it however the granule is opened: `virtualize` opens
    the granule as an in-memory file image, against which a relative name would resolve only from
    the current directory. Do not move OUTDIR after generating.
  * external_link_grid pads the granule with zero bytes (after the HDF5 end of allocation, which
    libhdf5 accepts) to the size of the link target, so chunk references a link-following reader
    takes from the target still lie inside the granule's byte range (no bounds check catches them).
  * Space freed by replacing objects is not reclaimed (h5py cannot), so most variants keep the
    good file's size; lon_deflate_bomb grows by the ~1 MB of the bomb.
"""

import io
import json
import os
import shutil
import struct
import sys
import zlib

import h5py
import numpy as np

HOSTNAME_FILE = "/etc/hostname"
BOMB_INFLATED = 1 << 30  # bytes of zeros the lon_deflate_bomb chunk inflates to
HUGE_ATTR_CLAIM = 1 << 40  # elements the huge_attribute dataspace claims
HUGE_ATTR_NAME = "hostile_huge_attribute"
WIDE_ATTR_NAME = "hostile_wide_attribute"
EXT_LINK_TARGET = "external_link_target.h5"
VDS_SOURCE = "vds_source.h5"
CHUNKED_VAR = "Grid/precipitation"


class Unsupported(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# helpers


def read_attrs(obj):
    """Every attribute of obj as (name, file datatype, dataspace, value), types exact."""
    out = []
    for name in obj.attrs:
        bname = name.encode()
        aid = h5py.h5a.open(obj.id, bname)
        buf = np.empty(aid.shape, dtype=aid.dtype)
        aid.read(buf)
        out.append((bname, aid.get_type(), aid.get_space(), buf))
    return out


def write_attrs(obj, attrs):
    for bname, tid, sid, buf in attrs:
        h5py.h5a.create(obj.id, bname, tid, sid).write(buf)


def copy_attrs(src, dst):
    """Copies every attribute of src to dst with its exact file datatype and dataspace."""
    write_attrs(dst, read_attrs(src))


def set_attr_like(obj, name, value):
    """Replaces attribute `name` by `value`, keeping the attribute's file datatype (string kind,
    character set, padding) and dataspace."""
    bname = name.encode()
    aid = h5py.h5a.open(obj.id, bname)
    tid, sid, dtype, shape = aid.get_type(), aid.get_space(), aid.dtype, aid.shape
    del aid
    if isinstance(tid, h5py.h5t.TypeStringID) and not tid.is_variable_str():
        if len(value.encode()) > tid.get_size():
            raise Unsupported(f"{name}: {value!r} does not fit the fixed-length string type")
    buf = np.empty(shape, dtype=dtype)
    buf[...] = value.encode() if dtype.kind == "S" else value
    h5py.h5a.delete(obj.id, bname)
    h5py.h5a.create(obj.id, bname, tid, sid).write(buf)


def superblock(raw):
    """(base address, sizeof offsets, sizeof lengths) of an HDF5 file image."""
    sig = b"\x89HDF\r\n\x1a\n"
    pos = 0
    while pos < len(raw) and raw[pos : pos + 8] != sig:
        pos = 512 if pos == 0 else pos * 2
    if pos >= len(raw):
        raise Unsupported("no HDF5 superblock signature")
    version = raw[pos + 8]
    if version in (0, 1):
        return pos, raw[pos + 13], raw[pos + 14]
    return pos, raw[pos + 9], raw[pos + 10]


def uint(raw, off, size):
    return int.from_bytes(raw[off : off + size], "little")


def chunk_btree_leaves(path, dset_path):
    """The leaf nodes of a dataset's v1 chunk B-tree as [(file position, [(key position, chunk
    offsets, child address)])], found by scanning for "TREE" nodes of type 1 whose child addresses
    are the dataset's chunk addresses."""
    with h5py.File(path, "r") as f:
        d = f[dset_path]
        rank = d.ndim
        addrs = {d.id.get_chunk_info(i).byte_offset for i in range(d.id.get_num_chunks())}
    with open(path, "rb") as fh:
        raw = fh.read()
    base, so, _sl = superblock(raw)
    key_size = 8 + 8 * (rank + 1)  # chunk size u32, filter mask u32, (rank + 1) u64 offsets
    leaves = []
    pos = raw.find(b"TREE")
    while 0 <= pos <= len(raw) - 8:
        node_type, level = raw[pos + 4], raw[pos + 5]
        used = struct.unpack_from("<H", raw, pos + 6)[0]
        end = pos + 8 + 2 * so + used * (key_size + so) + key_size
        if node_type == 1 and level == 0 and used > 0 and end <= len(raw):
            entries = []
            at = pos + 8 + 2 * so  # past signature, type, level, entries used, left, right
            for _ in range(used):
                offsets = struct.unpack_from(f"<{rank + 1}Q", raw, at + 8)
                child = uint(raw, at + key_size, so)
                entries.append((at, offsets, child))
                at += key_size + so
            if all(c in addrs or c + base in addrs for _, _, c in entries):
                leaves.append((pos, entries))
        pos = raw.find(b"TREE", pos + 1)
    found = sum(len(e) for _, e in leaves)
    if found != len(addrs):
        raise Unsupported(
            f"{dset_path}: found {found} of {len(addrs)} chunks in v1 B-tree leaves "
            "(is the chunk index a v1 B-tree? `synth --hdf5-format earliest`)"
        )
    return leaves, rank


def patch_chunk_key(path, dset_path, pick, new_offsets_of):
    """Rewrites the offsets of one chunk key in the dataset's v1 chunk B-tree; returns (old, new,
    what h5py now reports for that chunk).
    pick(entries) chooses the entry index among all leaf entries sorted by offset;
    new_offsets_of(entries, i) gives its new offsets (rank values, the element-size dim stays 0)."""
    leaves, rank = chunk_btree_leaves(path, dset_path)
    entries = sorted((e for _, es in leaves for e in es), key=lambda e: e[1])
    i = pick(entries)
    key_pos, old, child = entries[i]
    new = tuple(new_offsets_of(entries, i)) + (old[rank],)
    with open(path, "r+b") as fh:
        fh.seek(key_pos + 8)
        fh.write(struct.pack(f"<{rank + 1}Q", *new))
    return old[:rank], new[:rank], h5py_sees(path, dset_path, child, new[:rank])


def h5py_sees(path, dset_path, child, expected):
    """What libhdf5 (through h5py) reports for the patched chunk, as a clause for the description;
    raises Unsupported if it reports an offset other than the patched one."""
    try:
        with h5py.File(path, "r") as f:
            d = f[dset_path]
            seen = [d.id.get_chunk_info(j) for j in range(d.id.get_num_chunks())]
    except Exception as e:  # libhdf5 validates some keys while iterating the B-tree
        return f"h5py (libhdf5 {h5py.version.hdf5_version}) refuses to list the chunks: {e}"
    mine = [tuple(c.chunk_offset) for c in seen if c.byte_offset == child]
    if mine != [tuple(expected)]:
        raise Unsupported(
            f"after patching, h5py reports {mine} for the chunk at {child}, expected {expected}"
        )
    return f"h5py's get_chunk_info reports the patched offset {tuple(expected)}"


def lon_axis(dset):
    """Index of the lon dimension of a data variable (DimensionNames, else the dim of 3600)."""
    names = dset.attrs.get("DimensionNames")
    if names is not None:
        if isinstance(names, bytes):
            names = names.decode()
        parts = [p.strip() for p in str(names).split(",")]
        if "lon" in parts:
            return parts.index("lon")
    return list(dset.shape).index(3600)


def deflate_bomb(inflated):
    """A zlib stream of about inflated/1030 bytes that inflates to `inflated` zero bytes: one
    1 MiB block compressed with a full flush (so every next block compresses to the same bytes),
    repeated, then an empty final block and the Adler-32 of the zeros."""
    block = 1 << 20
    if inflated % block:
        raise ValueError("inflated size must be a multiple of 1 MiB")
    zeros = bytes(block)
    c = zlib.compressobj(9)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    adler = ((inflated % 65521) << 16) | 1  # Adler-32 of n zero bytes
    return first + again * (inflated // block - 1) + b"\x03\x00" + struct.pack(">I", adler)


def replace_dataset(grid, name, make):
    """Deletes grid[name], creates its replacement with make(grid, name, info of the old one) and
    gives it the old one's attributes."""
    old = grid[name]
    info = {"shape": old.shape, "dtype": old.dtype, "maxshape": old.maxshape}
    attrs = read_attrs(old)
    del old
    del grid[name]
    new = make(grid, name, info)
    write_attrs(new, attrs)
    return new


# ---------------------------------------------------------------------------------------------
# variants: each gets (path of the copy, its directory) and returns the one-line description


def huge_time(path, _dir):
    with h5py.File(path, "r+") as f:
        replace_dataset(
            f["Grid"],
            "time",
            lambda g, n, _i: g.create_dataset(
                n, shape=(2**40,), maxshape=(None,), chunks=(1024,), dtype="int32"
            ),
        )
    return (
        "Grid/time replaced by a chunked int32 dataset of shape (2**40,) (maxshape unlimited), "
        "chunks (1024,), no chunk written (reads give the fill value 0); attributes kept"
    )


def external_time(path, _dir):
    with h5py.File(path, "r+") as f:
        dtype = f["Grid/time"].dtype
        replace_dataset(
            f["Grid"],
            "time",
            lambda g, n, i: g.create_dataset(
                n, shape=(1,), dtype=i["dtype"], external=[(HOSTNAME_FILE, 0, 8)]
            ),
        )
    return (
        f"Grid/time replaced by a ({dtype}, shape (1,)) dataset in HDF5 external storage "
        f'[("{HOSTNAME_FILE}", offset 0, 8 bytes)]: reading time reads the host\'s {HOSTNAME_FILE}'
    )


def external_link_grid(path, dir_):
    target = os.path.join(dir_, EXT_LINK_TARGET)
    with h5py.File(path, "r+") as f, h5py.File(target, "w") as t:
        f.copy(f["Grid"], t, "Grid")
        del f["Grid"]
        f["Grid"] = h5py.ExternalLink(target, "/Grid")
    pad = os.path.getsize(target) - os.path.getsize(path)
    if pad > 0:
        with open(path, "ab") as fh:
            fh.write(bytes(pad))
    return (
        f"/Grid replaced by an external link to /Grid of {target} (absolute path, a full copy of "
        "the original Grid; the granule zero-padded to the target's size): a reader following "
        "links reads another file and takes its chunk offsets for the granule's"
    )


def soft_link_lon(path, _dir):
    with h5py.File(path, "r+") as f:
        if "Intermediate" not in f["Grid"]:
            f["Grid"].create_group("Intermediate")
        f.move("Grid/lon", "Grid/Intermediate/lon")
        f["Grid/lon"] = h5py.SoftLink("/Grid/Intermediate/lon")
    return (
        "Grid/lon moved to /Grid/Intermediate/lon (unchanged object) and replaced by a soft link "
        "to it: a reader following links sees the same lon and accepts it silently"
    )


def vds_lon(path, dir_):
    source = os.path.join(dir_, VDS_SOURCE)
    with h5py.File(path, "r+") as f:
        lon = f["Grid/lon"]
        with h5py.File(source, "w") as s:
            src = s.create_dataset("lon", data=lon[()], dtype=lon.dtype)
            copy_attrs(lon, src)

        def make(g, n, i):
            layout = h5py.VirtualLayout(shape=i["shape"], dtype=i["dtype"])
            layout[...] = h5py.VirtualSource(source, "lon", shape=i["shape"], dtype=i["dtype"])
            return g.create_virtual_dataset(n, layout)

        replace_dataset(f["Grid"], "lon", make)
    return (
        f"Grid/lon replaced by a virtual dataset (same shape, dtype, attributes) mapping all of "
        f"/lon in {source} (absolute path, next to the granule; same values as the original)"
    )


def lon_deflate_bomb(path, _dir):
    bomb = deflate_bomb(BOMB_INFLATED)
    with h5py.File(path, "r+") as f:

        def make(g, n, i):
            return g.create_dataset(
                n, shape=i["shape"], chunks=i["shape"], dtype=i["dtype"], compression="gzip"
            )

        lon = replace_dataset(f["Grid"], "lon", make)
        lon.id.write_direct_chunk((0,) * lon.ndim, bomb, filter_mask=0)
    return (
        f"Grid/lon rewritten as one deflate chunk (the whole array, {lon_nbytes(path)} bytes "
        f"decoded) whose stored {len(bomb)}-byte zlib stream inflates to {BOMB_INFLATED} zero bytes"
    )


def lon_nbytes(path):
    with h5py.File(path, "r") as f:
        return f["Grid/lon"].size * f["Grid/lon"].dtype.itemsize


def _lon_chunk(path):
    with h5py.File(path, "r") as f:
        d = f[CHUNKED_VAR]
        ax = lon_axis(d)
        return ax, d.chunks[ax], d.shape[ax]


def chunk_index_out_of_range(path, _dir):
    ax, c, n = _lon_chunk(path)
    nchunks = -(-n // c)

    def new(entries, i):
        o = list(entries[i][1][: len(entries[i][1]) - 1])
        o[ax] = nchunks * c
        return o

    old, now, seen = patch_chunk_key(path, CHUNKED_VAR, lambda es: len(es) - 1, new)
    return (
        f"{CHUNKED_VAR}: the v1 B-tree key of the last chunk patched from offset {old} to {now}: "
        f"lon chunk index {nchunks}, one past the last ({nchunks - 1}) of a {n}-long lon; {seen}"
    )


def chunk_index_duplicated(path, _dir):
    def new(entries, i):
        return entries[i - 1][1][:-1]

    old, now, seen = patch_chunk_key(path, CHUNKED_VAR, lambda es: len(es) - 1, new)
    return (
        f"{CHUNKED_VAR}: the v1 B-tree key of the last chunk patched from offset {old} to {now}, "
        f"the offset of the chunk before it (two chunks claim one place, none the last); {seen}"
    )


def chunk_index_misaligned(path, _dir):
    ax, c, n = _lon_chunk(path)

    def new(entries, i):
        o = list(entries[i][1][:-1])
        o[ax] += 1
        return o

    old, now, seen = patch_chunk_key(path, CHUNKED_VAR, lambda es: len(es) // 2, new)
    return (
        f"{CHUNKED_VAR}: the v1 B-tree key of a middle chunk patched from offset {old} to {now}: "
        f"lon offset not a multiple of the chunk size {c}, inside the grid; {seen}"
    )


def time_far_future(path, _dir):
    with h5py.File(path, "r+") as f:
        t = f["Grid/time"]
        dtype = t.dtype
        units = t.attrs["units"]
        units = units.decode() if isinstance(units, bytes) else str(units)
        if dtype.kind == "i" and dtype.itemsize <= 4:
            value = int(np.iinfo(dtype).max)
            new_units = "days since 1980-01-06 00:00:00 UTC"
            t[...] = value
            set_attr_like(t, "units", new_units)
            what = (
                f"Grid/time ({dtype}) set to {value} (the {dtype} max) and its units changed from "
                f"{units!r} to {new_units!r} (~5.9 million years: beyond chrono)"
            )
        elif dtype.kind in "iu":
            value = int(np.iinfo(dtype).max)
            t[...] = value
            what = f"Grid/time ({dtype}) set to {value} (the {dtype} max), units {units!r} kept"
        else:
            value = 2.0**62
            t[...] = value
            what = f"Grid/time ({dtype}) set to 2**62, units {units!r} kept"
    return what + "; shape, dtype and the other attributes kept"


def _attr_message(raw, name):
    """Position and fields of the (v1/v2/v3) attribute message named `name` in a file image."""
    bname = name.encode() + b"\0"
    hits = []
    pos = raw.find(bname)
    while pos >= 0:
        for hdr, version in ((8, 1), (8, 2), (9, 3)):
            start = pos - hdr
            if start < 0 or raw[start] != version:
                continue
            name_size, dt_size, ds_size = struct.unpack_from("<HHH", raw, start + 2)
            if name_size != len(bname):
                continue
            pad = (lambda x: (x + 7) & ~7) if version == 1 else (lambda x: x)
            ds_at = pos + pad(name_size) + pad(dt_size)
            hits.append((start, version, ds_at, ds_size))
        pos = raw.find(bname, pos + 1)
    if len(hits) != 1:
        raise Unsupported(f"attribute {name}: {len(hits)} candidate messages in the file")
    return hits[0]


def huge_attribute(path, _dir):
    with h5py.File(path, "r+") as f:
        d = f[CHUNKED_VAR]
        d.attrs.create(HUGE_ATTR_NAME, np.array([b"hostile-16-bytes"], dtype="S16"), dtype="S16")
    with open(path, "rb") as fh:
        raw = fh.read()
    _base, _so, sl = superblock(raw)
    _start, _version, ds_at, _ds_size = _attr_message(raw, HUGE_ATTR_NAME)
    ds_version, rank, flags = raw[ds_at], raw[ds_at + 1], raw[ds_at + 2]
    if rank != 1 or ds_version not in (1, 2):
        raise Unsupported(f"attribute dataspace version {ds_version} rank {rank}")
    dims_at = ds_at + (8 if ds_version == 1 else 4)
    if uint(raw, dims_at, sl) != 1:
        raise Unsupported("attribute dataspace: dimension is not 1")
    with open(path, "r+b") as fh:
        fh.seek(dims_at)
        fh.write(HUGE_ATTR_CLAIM.to_bytes(sl, "little"))
        if flags & 1:  # maximum dimensions present
            fh.seek(dims_at + sl)
            fh.write(HUGE_ATTR_CLAIM.to_bytes(sl, "little"))
    try:
        with h5py.File(path, "r") as f:
            shape = h5py.h5a.open(f[CHUNKED_VAR].id, HUGE_ATTR_NAME.encode()).shape
        if shape != (HUGE_ATTR_CLAIM,):
            raise Unsupported(f"after patching, h5py reports the attribute's shape as {shape}")
        seen = f"h5py reports its shape as ({HUGE_ATTR_CLAIM},)"
    except KeyError as e:  # libhdf5 checks the claimed size against the message while decoding
        seen = f"h5py (libhdf5 {h5py.version.hdf5_version}) refuses to open it: {e}"
    return (
        f"{CHUNKED_VAR} gets a fixed-length string attribute {HUGE_ATTR_NAME} (S16) whose "
        f"dataspace claims {HUGE_ATTR_CLAIM} elements ({16 * HUGE_ATTR_CLAIM} bytes) while 16 "
        "bytes are stored (dataspace message patched: libhdf5 cannot write an attribute over "
        f"64 KiB in a v1 object header); {seen}"
    )


def widest_attribute():
    """The widest one-element fixed-length string attribute libhdf5 writes into a v1 object
    header and reads back (the limit is the 64 KiB attribute message; libhdf5 2.0 writes messages
    of 65529-65535 bytes that it then refuses to read: "message not aligned"), found on scratch
    in-memory files."""

    def works(width):
        image = io.BytesIO()
        value = np.array([b"x" * width], dtype=f"S{width}")
        try:
            with h5py.File(image, "w", libver="earliest") as f:
                f.create_dataset("d", shape=(1,), dtype="f4").attrs.create(WIDE_ATTR_NAME, value)
            with h5py.File(image, "r") as f:
                return f["d"].attrs[WIDE_ATTR_NAME][0] == value[0]
        except (OSError, KeyError, ValueError, RuntimeError):
            return False

    lo, hi = 1, 1 << 16
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if works(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def wide_attribute(path, _dir):
    width = widest_attribute()
    value = np.array([b"x" * width], dtype=f"S{width}")
    with h5py.File(path, "r+") as f:
        f[CHUNKED_VAR].attrs.create(WIDE_ATTR_NAME, value)
    with h5py.File(path, "r") as f:
        if f[CHUNKED_VAR].attrs[WIDE_ATTR_NAME][0] != value[0]:
            raise Unsupported(f"{WIDE_ATTR_NAME} does not read back")
    return (
        f"{CHUNKED_VAR} gets a fixed-length string attribute {WIDE_ATTR_NAME} of one element of "
        f"{width} bytes, the widest libhdf5 writes and reads back in a v1 object header (64 KiB "
        "message limit)"
    )


VARIANTS = [
    ("huge_time", huge_time),
    ("external_time", external_time),
    ("external_link_grid", external_link_grid),
    ("soft_link_lon", soft_link_lon),
    ("vds_lon", vds_lon),
    ("lon_deflate_bomb", lon_deflate_bomb),
    ("chunk_index_out_of_range", chunk_index_out_of_range),
    ("chunk_index_duplicated", chunk_index_duplicated),
    ("chunk_index_misaligned", chunk_index_misaligned),
    ("time_far_future", time_far_future),
    ("huge_attribute", huge_attribute),
    ("wide_attribute", wide_attribute),
]


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: hostile_granules.py GOOD.HDF5 OUTDIR\n")
        return 2
    good, outdir = argv[1], os.path.abspath(argv[2])
    name = os.path.basename(good)
    with h5py.File(good, "r"):
        pass  # fail early on a file that is not HDF5
    for variant, make in VARIANTS:
        dir_ = os.path.join(outdir, variant)
        os.makedirs(dir_, exist_ok=True)
        path = os.path.join(dir_, name)
        shutil.copyfile(good, path)
        try:
            what = make(path, dir_)
        except Unsupported as e:
            sys.stderr.write(f"hostile_granules.py: {variant}: {e}\n")
            return 1
        print(json.dumps({"variant": variant, "path": path, "what": what}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
