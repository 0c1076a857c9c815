//! Synthetic IMERG granules, written with hdf5-metno and faithful to the real files' layout
//! (shared/imerg-facts.md): `/Grid` with the four data variables shaped `(1, 3600, 1800)` in
//! 25/25/13/25 stored chunks, `/Grid/Intermediate`, every coordinate, GPS-epoch int32 `time` with
//! a `julian` calendar attribute, the string `CodeMissingValue`, and deterministic rain-like data
//! with fill regions. Options cover deflate level, shuffle, HDF5 format version / chunk index, and
//! a few deliberate deviations the bad-input tests need.
//!
//! [`refs::synthetic_refs`] makes the references such granules would give without writing a file,
//! for stores too big to write (a simulated full record).

mod data;
pub mod refs;
pub mod rss;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use hdf5::types::VarLenUnicode;
use imerg_catalog::{ProductProfile, TimeRange};

pub use data::{Field, granule_field, grid_centres, mix, realistic_field};

/// GPS epoch, the origin of IMERG's `time` values.
pub fn gps_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1980, 1, 6, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// `units` of IMERG's `time` and `time_bnds`.
pub const TIME_UNITS: &str = "seconds since 1980-01-06 00:00:00 UTC";

/// HDF5 file format / chunk index choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum H5Format {
    /// Oldest format: version-1 B-tree chunk indexes (what netCDF-4 classic writers produce).
    #[default]
    Earliest,
    /// HDF5 1.10 format: fixed-array indexes for fixed-size datasets, extensible arrays for
    /// datasets with one unlimited dimension.
    V110,
}

impl FromStr for H5Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" | "v18" => Ok(Self::Earliest),
            "v110" | "latest" => Ok(Self::V110),
            other => Err(format!("unknown HDF5 format {other:?} (earliest|v110)")),
        }
    }
}

/// A deliberate extra filter, for testing how the virtualizer rejects what Zarr cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraFilter {
    Fletcher32,
    ScaleOffset,
    NBit,
}

/// How to write a granule.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Deflate level 0-9 (IMERG 1998 files: 6).
    pub deflate_level: u8,
    pub shuffle: bool,
    pub format: H5Format,
    /// Data variables with an unlimited `time` dimension (as netCDF writes them). With
    /// [`H5Format::V110`] this selects an extensible-array index, otherwise a fixed array.
    pub unlimited_time: bool,
    /// Add a filter to `precipitation` that Zarr cannot express (tests only).
    pub extra_filter: Option<ExtraFilter>,
    /// Override `precipitation`'s lon chunk size (tests of layout drift).
    pub precipitation_lon_chunk: Option<u64>,
    /// Leave these data variables out (tests of missing variables).
    pub omit_variables: Vec<String>,
    /// Shift all longitudes by this many degrees (tests of coordinate mismatch).
    pub lon_shift: f32,
    /// Cell-level noise so that granules have real IMERG's size (8-12 MB instead of ~1 MB):
    /// see [`data::realistic_field`]. Slower to write.
    pub realistic: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            deflate_level: 6,
            shuffle: false,
            format: H5Format::Earliest,
            unlimited_time: true,
            extra_filter: None,
            precipitation_lon_chunk: None,
            omit_variables: Vec::new(),
            lon_shift: 0.0,
            realistic: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("HDF5 error writing {path}: {source}")]
    Hdf5 {
        path: PathBuf,
        #[source]
        source: hdf5::Error,
    },
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] imerg_catalog::CatalogError),
}

/// Writes the granule of `profile` starting at `start` to `path` (atomically: a temporary file in
/// the same directory is renamed into place, so watchers never see half a file).
pub fn write_granule(
    path: &Path,
    profile: &ProductProfile,
    start: DateTime<Utc>,
    opts: &SynthOptions,
) -> Result<(), SynthError> {
    let io = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("partial");
    write_hdf5(&tmp, profile, start, opts).map_err(|source| SynthError::Hdf5 {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes every granule of `range` under `root` in the bucket layout
/// (`root/<collection>/YYYY/DDD/<name>`); returns the paths written, in time order.
pub fn write_range(
    root: &Path,
    profile: &ProductProfile,
    range: TimeRange,
    opts: &SynthOptions,
) -> Result<Vec<PathBuf>, SynthError> {
    let mut out = Vec::new();
    for g in profile.expected(range) {
        let path = root.join(&g.key);
        write_granule(&path, profile, g.start, opts)?;
        out.push(path);
    }
    Ok(out)
}

fn str_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v = VarLenUnicode::from_str(value).map_err(|e| hdf5::Error::from(e.to_string()))?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)
}

fn write_hdf5(
    path: &Path,
    profile: &ProductProfile,
    start: DateTime<Utc>,
    opts: &SynthOptions,
) -> hdf5::Result<()> {
    let layout = &profile.layout;
    let (n_lon, n_lat) = (layout.grid.n_lon as usize, layout.grid.n_lat as usize);
    let mut builder = hdf5::File::with_options();
    match opts.format {
        H5Format::Earliest => builder.with_fapl(|p| p.libver_earliest()),
        H5Format::V110 => builder.with_fapl(|p| p.libver_v110()),
    };
    let file = builder.create(path)?;
    let end = start + Duration::minutes(i64::from(profile.cadence_minutes)) - Duration::seconds(1);
    str_attr(
        &file,
        "FileHeader",
        &format!(
            "DOI=10.5067/GPM/IMERG/3B-HH/07;\nAlgorithmID=3IMERGHH;\nAlgorithmVersion=3IMERGH_7.1;\nFileName={};\nSatelliteName=MULTI;\nInstrumentName=MERGED;\nGenerationDateTime=2024-01-01T00:00:00.000Z;\nStartGranuleDateTime={};\nStopGranuleDateTime={};\nGranuleNumber=;\nNumberOfSwaths=0;\nNumberOfGrids=1;\nGranuleStart=;\nTimeInterval=HALF_HOUR;\nProcessingSystem=PPS;\nProductVersion=V07B;\nEmptyGranule=NOT_EMPTY;\nMissingData=;\n",
            profile.file_name(start),
            start.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            end.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        ),
    )?;
    str_attr(
        &file,
        "FileInfo",
        "DataFormatVersion=7a;\nTKCodeBuildVersion=1;\nMetadataVersion=7a;\nFormatPackage=HDF5-1.10.9;\nBlueprintFilename=GPM.V7.3IMERGHH.blueprint.xml;\nBlueprintVersion=BV_69;\nTKIOVersion=3.99;\nMetadataStyle=PVL;\nEndianType=LITTLE_ENDIAN;\n",
    )?;
    let grid = file.create_group(&layout.group)?;
    str_attr(
        &grid,
        "GridHeader",
        "BinMethod=ARITHMETIC_MEAN;\nRegistration=CENTER;\nLatitudeResolution=0.1;\nLongitudeResolution=0.1;\nNorthBoundingCoordinate=90;\nSouthBoundingCoordinate=-90;\nEastBoundingCoordinate=180;\nWestBoundingCoordinate=-180;\nOrigin=SOUTHWEST;\n",
    )?;
    let inter = grid.create_group("Intermediate")?;
    str_attr(&inter, "Description", "ignored by imerg-ingest")?;

    // netCDF dimension placeholders: declared, never written.
    for dim in ["nv", "lonv", "latv"] {
        let ds = grid.new_dataset::<i32>().shape(2).create(dim)?;
        str_attr(
            &ds,
            "NAME",
            "This is a netCDF dimension but not a netCDF variable.",
        )?;
    }

    // Coordinates.
    let (lon, lat) = grid_centres(n_lon, n_lat, opts.lon_shift);
    let bounds = |v: &[f32]| -> Vec<f32> { v.iter().flat_map(|x| [x - 0.05, x + 0.05]).collect() };
    let coord =
        |name: &str, values: &[f32], shape: &[usize], attrs: &[(&str, &str)]| -> hdf5::Result<()> {
            let ds = grid
                .new_dataset::<f32>()
                .shape(shape)
                .chunk(shape)
                .create(name)?;
            ds.write_raw(values)?;
            for (k, v) in attrs {
                str_attr(&ds, k, v)?;
            }
            Ok(())
        };
    coord(
        "lon",
        &lon,
        &[n_lon],
        &[
            ("units", "degrees_east"),
            ("standard_name", "longitude"),
            (
                "LongName",
                "Longitude at the center of 0.10 degree grid intervals of longitude from -180 to 180.",
            ),
            ("bounds", "lon_bnds"),
        ],
    )?;
    coord(
        "lat",
        &lat,
        &[n_lat],
        &[
            ("units", "degrees_north"),
            ("standard_name", "latitude"),
            (
                "LongName",
                "Latitude at the center of 0.10 degree grid intervals of latitude from -90 to 90.",
            ),
            ("bounds", "lat_bnds"),
        ],
    )?;
    coord(
        "lon_bnds",
        &bounds(&lon),
        &[n_lon, 2],
        &[("units", "degrees_east"), ("coordinates", "lon nv")],
    )?;
    coord(
        "lat_bnds",
        &bounds(&lat),
        &[n_lat, 2],
        &[("units", "degrees_north"), ("coordinates", "lat nv")],
    )?;

    let t0 = (start - gps_epoch()).num_seconds();
    let t1 = t0 + i64::from(profile.cadence_minutes) * 60;
    let time_ds = grid
        .new_dataset::<i32>()
        .shape(1..)
        .chunk(32)
        .create("time")?;
    time_ds.write_raw(&[i32::try_from(t0).unwrap_or(i32::MAX)])?;
    for (k, v) in [
        ("units", TIME_UNITS),
        ("calendar", "julian"),
        ("standard_name", "time"),
        ("axis", "T"),
        ("bounds", "time_bnds"),
        ("LongName", "Representative time of data"),
    ] {
        str_attr(&time_ds, k, v)?;
    }
    let tb = grid
        .new_dataset::<i32>()
        .shape((1.., 2))
        .chunk((32, 2))
        .create("time_bnds")?;
    tb.write_raw(&[
        i32::try_from(t0).unwrap_or(i32::MAX),
        i32::try_from(t1).unwrap_or(i32::MAX),
    ])?;
    str_attr(&tb, "units", TIME_UNITS)?;
    str_attr(&tb, "coordinates", "time nv")?;

    // Data variables.
    let time_index = profile.check_start(start).unwrap_or(0);
    for var in &layout.variables {
        if opts.omit_variables.iter().any(|o| o == &var.name) {
            continue;
        }
        let mut chunk = [
            var.chunk[0] as usize,
            var.chunk[1] as usize,
            var.chunk[2] as usize,
        ];
        if let (true, Some(c)) = (var.name == "precipitation", opts.precipitation_lon_chunk) {
            chunk[1] = c as usize;
        }
        let field = if opts.realistic {
            realistic_field(&var.name, time_index, n_lon, n_lat)
        } else {
            granule_field(&var.name, time_index, n_lon, n_lat)
        };
        let typed = match field {
            Field::F32(_) => grid.new_dataset::<f32>(),
            Field::I16(_) => grid.new_dataset::<i16>(),
        };
        let mut b = if opts.unlimited_time {
            typed.shape((1.., n_lon, n_lat))
        } else {
            typed.shape((1, n_lon, n_lat))
        }
        .chunk(chunk);
        if opts.shuffle {
            b = b.shuffle();
        }
        b = b.deflate(opts.deflate_level);
        if var.name == "precipitation" {
            b = match opts.extra_filter {
                Some(ExtraFilter::Fletcher32) => b.fletcher32(),
                Some(ExtraFilter::ScaleOffset) => {
                    b.scale_offset(hdf5::filters::ScaleOffset::FloatDScale(2))
                }
                Some(ExtraFilter::NBit) => b.nbit(),
                None => b,
            };
        }
        let ds = match &field {
            Field::F32(v) => {
                let ds = b.fill_value(data::FILL_F32).create(var.name.as_str())?;
                ds.write_raw(v)?;
                ds.new_attr::<f32>()
                    .create("_FillValue")?
                    .write_scalar(&data::FILL_F32)?;
                str_attr(&ds, "CodeMissingValue", "-9999.9")?;
                ds
            }
            Field::I16(v) => {
                let ds = b.fill_value(data::FILL_I16).create(var.name.as_str())?;
                ds.write_raw(v)?;
                ds.new_attr::<i16>()
                    .create("_FillValue")?
                    .write_scalar(&data::FILL_I16)?;
                str_attr(&ds, "CodeMissingValue", "-9999")?;
                ds
            }
        };
        str_attr(&ds, "DimensionNames", "time,lon,lat")?;
        str_attr(&ds, "Units", &var.units)?;
        str_attr(&ds, "units", &var.units)?;
        str_attr(&ds, "coordinates", "time lon lat")?;
        str_attr(&ds, "LongName", &var.long_name)?;
    }
    file.flush()?;
    file.close()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_granule_h5_can_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProductProfile::final_v07b();
        let start = imerg_catalog::parse_time("2001-05-06T10:30:00Z").unwrap();
        let range = TimeRange::new(start, start + Duration::minutes(30)).unwrap();
        let paths = write_range(dir.path(), &p, range, &SynthOptions::default()).unwrap();
        assert_eq!(paths.len(), 1);
        assert!(paths[0].ends_with(p.key(start)));
        let f = hdf5::File::open(&paths[0]).unwrap();
        let t: Vec<i32> = f.dataset("Grid/time").unwrap().read_raw().unwrap();
        assert_eq!(i64::from(t[0]), (start - gps_epoch()).num_seconds());
        let ds = f.dataset("Grid/precipitation").unwrap();
        assert_eq!(ds.shape(), vec![1, 3600, 1800]);
        assert_eq!(ds.num_chunks(), Some(25));
        let v: Vec<f32> = ds.read_raw().unwrap();
        assert!(v.contains(&data::FILL_F32), "has fill");
        assert!(v.iter().any(|x| *x > 0.0), "has rain");
        let Field::F32(expected) =
            granule_field("precipitation", p.check_start(start).unwrap(), 3600, 1800)
        else {
            panic!("precipitation is f32")
        };
        assert_eq!(v, expected);
        assert_eq!(
            f.dataset("Grid/probabilityLiquidPrecipitation")
                .unwrap()
                .num_chunks(),
            Some(13)
        );
    }
}
