//! The libhdf5 (hdf5-metno) side of the shared builder: an opened [`hdf5::File`] seen as a
//! [`GranuleSource`]. This is the oracle path: whatever libhdf5 reports is what the file says.

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use imerg_refs::FillValue;
use serde_json::{Map, Value};

use crate::VirtualizeError;
use crate::attrs;
use crate::build::{
    FilterInfo, GranuleSource, GroupSource, Storage, StoredChunk, TypeInfo, VariableSource,
};

pub(crate) fn h5err(key: &str, context: &str) -> impl Fn(hdf5::Error) -> VirtualizeError {
    let (key, context) = (key.to_string(), context.to_string());
    move |e| VirtualizeError::Hdf5 {
        key: key.clone(),
        context: context.clone(),
        detail: e.to_string(),
    }
}

fn zarr_dtype(desc: &TypeDescriptor) -> Option<&'static str> {
    Some(match desc {
        TypeDescriptor::Float(FloatSize::U4) => "float32",
        TypeDescriptor::Float(FloatSize::U8) => "float64",
        TypeDescriptor::Integer(IntSize::U1) => "int8",
        TypeDescriptor::Integer(IntSize::U2) => "int16",
        TypeDescriptor::Integer(IntSize::U4) => "int32",
        TypeDescriptor::Integer(IntSize::U8) => "int64",
        TypeDescriptor::Unsigned(IntSize::U1) => "uint8",
        TypeDescriptor::Unsigned(IntSize::U2) => "uint16",
        TypeDescriptor::Unsigned(IntSize::U4) => "uint32",
        TypeDescriptor::Unsigned(IntSize::U8) => "uint64",
        _ => return None,
    })
}

/// An HDF5 file opened by libhdf5.
pub(crate) struct MetnoGranule<'a> {
    pub file: &'a hdf5::File,
    pub key: &'a str,
}

/// Refuses `name` in `parent` unless it is a hard link, before anything follows it: a soft link
/// can alias another object, and an external link opens another file, which a granule has no
/// business naming (review M1).
fn hard_link_only(parent: &hdf5::Group, key: &str, name: &str) -> Result<(), VirtualizeError> {
    let mut kind = None;
    parent
        .iter_visit_default(|n, info| {
            if n == name {
                kind = Some(info.link_type);
            }
            Ok(())
        })
        .map_err(h5err(key, name))?;
    match kind {
        Some(hdf5::LinkType::Hard) | None => Ok(()),
        Some(other) => Err(VirtualizeError::ExternalData {
            key: key.into(),
            name: name.into(),
            what: match other {
                hdf5::LinkType::Soft => "a soft link".into(),
                _ => "an external link".into(),
            },
        }),
    }
}

/// Refuses a dataset whose values live outside the granule: HDF5 external storage reads any
/// path it names, and a virtual dataset maps other files (review M1).
fn stored_inside(ds: &hdf5::Dataset, key: &str, name: &str) -> Result<(), VirtualizeError> {
    let dcpl = ds.dcpl().map_err(h5err(key, name))?;
    let what = if !dcpl.external().is_empty() {
        "external storage"
    } else if dcpl.layout() == hdf5::plist::dataset_create::Layout::Virtual {
        "a virtual dataset"
    } else {
        return Ok(());
    };
    Err(VirtualizeError::ExternalData {
        key: key.into(),
        name: name.into(),
        what: what.into(),
    })
}

impl GranuleSource for MetnoGranule<'_> {
    fn group(&self, name: &str) -> Result<Option<Box<dyn GroupSource + '_>>, VirtualizeError> {
        if !self.file.link_exists(name) {
            return Ok(None);
        }
        hard_link_only(self.file, self.key, name)?;
        let group = self.file.group(name).map_err(h5err(self.key, name))?;
        Ok(Some(Box::new(MetnoGroup {
            group,
            key: self.key,
        })))
    }
}

struct MetnoGroup<'a> {
    group: hdf5::Group,
    key: &'a str,
}

impl GroupSource for MetnoGroup<'_> {
    fn has(&self, name: &str) -> bool {
        self.group.link_exists(name)
    }

    fn dataset(&self, name: &str) -> Result<Box<dyn VariableSource + '_>, VirtualizeError> {
        hard_link_only(&self.group, self.key, name)?;
        let ds = self.group.dataset(name).map_err(h5err(self.key, name))?;
        stored_inside(&ds, self.key, name)?;
        Ok(Box::new(MetnoVar {
            ds,
            key: self.key,
            name: name.to_string(),
        }))
    }
}

struct MetnoVar<'a> {
    ds: hdf5::Dataset,
    key: &'a str,
    name: String,
}

impl MetnoVar<'_> {
    fn err(&self) -> impl Fn(hdf5::Error) -> VirtualizeError {
        h5err(self.key, &self.name)
    }
}

impl VariableSource for MetnoVar<'_> {
    fn shape(&self) -> Vec<u64> {
        self.ds.shape().iter().map(|d| *d as u64).collect()
    }

    fn dtype(&self) -> Result<TypeInfo, VirtualizeError> {
        let dtype = self.ds.dtype().map_err(self.err())?;
        let desc = dtype.to_descriptor().map_err(self.err())?;
        Ok(TypeInfo {
            zarr: zarr_dtype(&desc),
            desc: format!("{desc:?}"),
            big_endian: matches!(dtype.byte_order(), hdf5::datatype::ByteOrder::BigEndian),
            is_f32: desc == TypeDescriptor::Float(FloatSize::U4),
        })
    }

    fn storage(&self) -> Storage {
        match self.ds.chunk() {
            Some(chunk) => Storage::Chunked(chunk.iter().map(|c| *c as u64).collect()),
            None => Storage::NotChunked(match self.ds.layout() {
                hdf5::plist::dataset_create::Layout::Compact => "Compact",
                hdf5::plist::dataset_create::Layout::Contiguous => "Contiguous",
                hdf5::plist::dataset_create::Layout::Chunked => "Chunked",
                #[allow(unreachable_patterns)]
                _ => "Virtual",
            }),
        }
    }

    fn filters(&self) -> Vec<FilterInfo> {
        self.ds
            .filters()
            .into_iter()
            .map(|f| match f {
                hdf5::filters::Filter::Shuffle => FilterInfo::Shuffle,
                hdf5::filters::Filter::Deflate(level) => FilterInfo::Deflate(u32::from(level)),
                hdf5::filters::Filter::Fletcher32 => FilterInfo::Fletcher32,
                hdf5::filters::Filter::SZip(..) => FilterInfo::Szip,
                hdf5::filters::Filter::NBit => FilterInfo::NBit,
                hdf5::filters::Filter::ScaleOffset(_) => FilterInfo::ScaleOffset,
                hdf5::filters::Filter::User(id, _) => FilterInfo::User(i64::from(id)),
            })
            .collect()
    }

    fn fill_value(&self, as_float: bool) -> Result<Option<FillValue>, VirtualizeError> {
        let ds = &self.ds;
        let read = || -> hdf5::Result<Option<FillValue>> {
            if ds.attr_names()?.iter().any(|n| n == "_FillValue") {
                let a = ds.attr("_FillValue")?;
                return Ok(Some(if as_float {
                    FillValue::Float(a.read_raw::<f64>()?.first().copied().unwrap_or(f64::NAN))
                } else {
                    FillValue::Int(a.read_raw::<i64>()?.first().copied().unwrap_or(0))
                }));
            }
            let dcpl = ds.dcpl()?;
            Ok(if as_float {
                dcpl.get_fill_value_as::<f64>()?.map(FillValue::Float)
            } else {
                dcpl.get_fill_value_as::<i64>()?.map(FillValue::Int)
            })
        };
        read().map_err(self.err())
    }

    fn attributes(&self) -> Result<Map<String, Value>, VirtualizeError> {
        attrs::attributes(&self.ds).map_err(self.err())
    }

    fn string_attr(&self, name: &str) -> Result<Option<String>, VirtualizeError> {
        attrs::string_attr(&self.ds, name).map_err(self.err())
    }

    fn chunks(&self) -> Result<Vec<StoredChunk>, VirtualizeError> {
        let n = self.ds.num_chunks().unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let ci = self.ds.chunk_info(i).ok_or_else(|| {
                (self.err())(hdf5::Error::from(format!("chunk_info({i}) failed")))
            })?;
            out.push(StoredChunk {
                offset: ci.offset,
                addr: ci.addr,
                size: ci.size,
                filter_mask: ci.filter_mask,
            });
        }
        Ok(out)
    }

    fn read_f32(&self) -> Result<Vec<f32>, VirtualizeError> {
        self.ds.read_raw().map_err(self.err())
    }

    fn read_i64(&self) -> Result<Vec<i64>, VirtualizeError> {
        self.ds.read_raw().map_err(self.err())
    }
}
