//! The layout a product's granules are expected to have: grid size, the data variables with their
//! dtype and HDF5 chunk shape, and the HDF5 group they live in. The virtualizer checks every file
//! against it; the synthetic generator writes it.

use serde::{Deserialize, Serialize};

/// Horizontal grid of a product (IMERG: 3600 longitudes by 1800 latitudes, lon first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSpec {
    pub n_lon: u64,
    pub n_lat: u64,
}

/// One data variable as the profile expects it in every granule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableSpec {
    pub name: String,
    /// Zarr v3 data type name: `float32`, `int16`, ...
    pub dtype: String,
    /// HDF5 chunk shape `(time, lon, lat)`.
    pub chunk: [u64; 3],
    pub long_name: String,
    pub units: String,
}

impl VariableSpec {
    /// Number of chunks a complete granule stores for this variable (edge chunks included).
    pub fn chunks_per_granule(&self, grid: &GridSpec) -> u64 {
        grid.n_lon.div_ceil(self.chunk[1]) * grid.n_lat.div_ceil(self.chunk[2])
    }
}

/// Everything about a granule's inside that the profile fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutSpec {
    /// HDF5 group holding the variables and coordinates (`Grid`).
    pub group: String,
    pub grid: GridSpec,
    pub variables: Vec<VariableSpec>,
}

impl LayoutSpec {
    /// IMERG V07 half-hourly layout (see shared/imerg-facts.md): 25/25/13/25 chunks, 88 in all.
    pub fn imerg_v07() -> Self {
        let var =
            |name: &str, dtype: &str, lon_chunk: u64, long_name: &str, units: &str| VariableSpec {
                name: name.into(),
                dtype: dtype.into(),
                chunk: [1, lon_chunk, 1800],
                long_name: long_name.into(),
                units: units.into(),
            };
        Self {
            group: "Grid".into(),
            grid: GridSpec {
                n_lon: 3600,
                n_lat: 1800,
            },
            variables: vec![
                var(
                    "precipitation",
                    "float32",
                    145,
                    "Merged satellite-gauge precipitation estimate",
                    "mm/hr",
                ),
                var(
                    "randomError",
                    "float32",
                    145,
                    "Random error estimate of the merged precipitation",
                    "mm/hr",
                ),
                var(
                    "probabilityLiquidPrecipitation",
                    "int16",
                    291,
                    "Probability of liquid precipitation",
                    "percent",
                ),
                var(
                    "precipitationQualityIndex",
                    "float32",
                    145,
                    "Quality index for the merged precipitation",
                    "1",
                ),
            ],
        }
    }

    /// Chunk references one complete granule carries (88 for IMERG V07).
    pub fn refs_per_granule(&self) -> u64 {
        self.variables
            .iter()
            .map(|v| v.chunks_per_granule(&self.grid))
            .sum()
    }

    pub fn variable(&self, name: &str) -> Option<&VariableSpec> {
        self.variables.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imerg_has_88_refs_per_granule() {
        let l = LayoutSpec::imerg_v07();
        let per: Vec<u64> = l
            .variables
            .iter()
            .map(|v| v.chunks_per_granule(&l.grid))
            .collect();
        assert_eq!(per, vec![25, 25, 13, 25]);
        assert_eq!(l.refs_per_granule(), 88);
    }
}
