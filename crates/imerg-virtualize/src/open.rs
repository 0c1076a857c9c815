//! Opening a granule: from a byte buffer in memory (HDF5 core driver with a file image, no temp
//! files) or from a local path, after checking the HDF5 signature so that non-HDF5 input gets a
//! clear error instead of an HDF5 error stack.

use std::ffi::CString;
use std::path::Path;

use hdf5_sys::{h5f, h5p};

use crate::VirtualizeError;

const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// True if the HDF5 signature is at offset 0, 512, 1024, 2048, ... (where HDF5 looks for it).
pub(crate) fn has_signature(head: &[u8]) -> bool {
    let mut off = 0usize;
    while off + SIGNATURE.len() <= head.len() {
        if &head[off..off + SIGNATURE.len()] == SIGNATURE {
            return true;
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    false
}

fn open_error(key: &str, size: u64, err: &hdf5::Error) -> VirtualizeError {
    let detail = err.to_string();
    if detail.contains("truncated") || detail.contains("eof") || detail.contains("EOF") {
        VirtualizeError::Truncated {
            key: key.to_string(),
            size,
            detail,
        }
    } else {
        VirtualizeError::Open {
            key: key.to_string(),
            detail,
        }
    }
}

/// Opens an HDF5 file image held in memory. HDF5 copies the buffer into its core driver.
pub(crate) fn open_bytes(key: &str, buf: &[u8]) -> Result<hdf5::File, VirtualizeError> {
    let size = buf.len() as u64;
    if !has_signature(buf) {
        return Err(VirtualizeError::NotHdf5 {
            key: key.to_string(),
            size,
        });
    }
    let hdf5_err = |e: hdf5::Error| open_error(key, size, &e);
    let fapl = hdf5::plist::FileAccess::build()
        .core_filebacked(false)
        .finish()
        .map_err(hdf5_err)?;
    hdf5::sync::sync(|| {
        // SAFETY: `fapl` is a live file-access property list; HDF5 copies `buf` (default
        // callbacks), so the pointer is only read during this call.
        let rc = unsafe { h5p::H5Pset_file_image(fapl.id(), buf.as_ptr() as *mut _, buf.len()) };
        if rc < 0 {
            return Err(hdf5_err(
                hdf5::Error::query()
                    .unwrap_or_else(|_| hdf5::Error::from("H5Pset_file_image failed")),
            ));
        }
        let name = CString::new(format!("mem:{key}")).unwrap_or_default();
        // SAFETY: a valid C string and a live FAPL id.
        let fid = unsafe { h5f::H5Fopen(name.as_ptr(), h5f::H5F_ACC_RDONLY, fapl.id()) };
        if fid < 0 {
            let e = hdf5::Error::query()
                .unwrap_or_else(|_| hdf5::Error::from("H5Fopen of the file image failed"));
            return Err(hdf5_err(e));
        }
        // SAFETY: `fid` is a freshly opened file id whose single reference we hand over.
        unsafe { hdf5::from_id::<hdf5::File>(fid) }.map_err(hdf5_err)
    })
}

/// Opens a granule file on the local filesystem.
pub(crate) fn open_path(key: &str, path: &Path) -> Result<(hdf5::File, u64), VirtualizeError> {
    use std::io::Read;
    let io = |e: std::io::Error| VirtualizeError::Open {
        key: key.to_string(),
        detail: format!("{}: {e}", path.display()),
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .map_err(io)?
        .read(&mut head)
        .map_err(io)?;
    if !has_signature(&head[..n]) {
        return Err(VirtualizeError::NotHdf5 {
            key: key.to_string(),
            size,
        });
    }
    let file = hdf5::File::open(path).map_err(|e| open_error(key, size, &e))?;
    Ok((file, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_signature_where_hdf5_looks() {
        let mut b = vec![0u8; 2048];
        assert!(!has_signature(&b));
        b[512..520].copy_from_slice(SIGNATURE);
        assert!(has_signature(&b));
        let mut c = vec![0u8; 2048];
        c[100..108].copy_from_slice(SIGNATURE);
        assert!(!has_signature(&c));
    }
}
