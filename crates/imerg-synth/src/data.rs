//! Deterministic rain-like fields for synthetic granules: a few storms on a dry background, a
//! smooth-ish quality index, liquid-precipitation probability by latitude, and fill regions (a
//! polar cap and a moving swath gap), all derived from the granule's time index only.

/// Fill value of the float variables (-9999.9 as float32).
pub const FILL_F32: f32 = -9999.9;
/// Fill value of the int16 variable.
pub const FILL_I16: i16 = -9999;

/// The values of one data variable, `(lon, lat)` in C order (lat fastest).
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    F32(Vec<f32>),
    I16(Vec<i16>),
}

/// SplitMix64: a tiny, well-mixed deterministic hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Storm {
    lon: usize,
    lat: usize,
    radius: usize,
    peak: f32,
}

fn storms(time_index: u64, n_lon: usize, n_lat: usize) -> Vec<Storm> {
    (0..8u64)
        .map(|k| {
            let h = mix(time_index.wrapping_mul(31).wrapping_add(k));
            Storm {
                lon: (h % n_lon as u64) as usize,
                lat: (n_lat / 6) + ((h >> 20) % (n_lat as u64 * 2 / 3)) as usize,
                radius: 20 + ((h >> 40) % 100) as usize,
                peak: 2.0 + ((h >> 50) % 400) as f32 / 10.0,
            }
        })
        .collect()
}

/// Cells without data: a southern polar cap and a swath gap that moves with time.
fn is_fill(time_index: u64, lon: usize, lat: usize, n_lon: usize, n_lat: usize) -> bool {
    let cap = n_lat / 12;
    let gap_start = ((time_index * 97) % n_lon as u64) as usize;
    let gap_width = n_lon / 40;
    let in_gap = (lon + n_lon - gap_start) % n_lon < gap_width && lat > n_lat / 3;
    lat < cap || in_gap
}

/// Cell-centre longitudes and latitudes of IMERG's 0.1 degree grid (plus a longitude shift).
pub fn grid_centres(n_lon: usize, n_lat: usize, lon_shift: f32) -> (Vec<f32>, Vec<f32>) {
    let lon = (0..n_lon)
        .map(|i| -179.95 + 0.1 * i as f32 + lon_shift)
        .collect();
    let lat = (0..n_lat).map(|j| -89.95 + 0.1 * j as f32).collect();
    (lon, lat)
}

/// The rain rate (mm/hr) field before fill is applied; 0 where dry.
fn rain(time_index: u64, n_lon: usize, n_lat: usize) -> Vec<f32> {
    let mut v = vec![0f32; n_lon * n_lat];
    for s in storms(time_index, n_lon, n_lat) {
        let r2 = (s.radius * s.radius) as f32;
        let lat_lo = s.lat.saturating_sub(s.radius);
        let lat_hi = (s.lat + s.radius).min(n_lat - 1);
        for dl in 0..=2 * s.radius {
            let lon = (s.lon + n_lon + dl - s.radius) % n_lon;
            let dx = dl as f32 - s.radius as f32;
            for lat in lat_lo..=lat_hi {
                let dy = lat as f32 - s.lat as f32;
                let d2 = dx * dx + dy * dy;
                if d2 < r2 {
                    let cell = &mut v[lon * n_lat + lat];
                    // Quantized to 0.01 mm/hr like the real product's precision.
                    let val = (s.peak * (1.0 - d2 / r2) * 100.0).round() / 100.0;
                    *cell = cell.max(val);
                }
            }
        }
    }
    v
}

/// The deterministic values of `var` for the granule at `time_index`.
pub fn granule_field(var: &str, time_index: u64, n_lon: usize, n_lat: usize) -> Field {
    smooth_field(var, time_index, n_lon, n_lat)
}

/// Like [`granule_field`], with cell-level noise that compresses like real IMERG: light rain
/// scattered over an eighth of the cells, 2-decimal values, a noisy quality index. A
/// granule is then 8-12 MB, as NASA's are (the smooth fields give about 1 MB), which matters
/// wherever the share of an object's bytes is measured (ranged reads).
pub fn realistic_field(var: &str, time_index: u64, n_lon: usize, n_lat: usize) -> Field {
    let noise = |salt: u64, cell: usize| mix(time_index ^ (salt << 56) ^ ((cell as u64) << 8));
    // A unit-mean exponential draw, quantized to 0.01.
    let draw = |h: u64, scale: f32| {
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() as f32 * scale) * 100.0).round() / 100.0
    };
    match smooth_field(var, time_index, n_lon, n_lat) {
        Field::F32(mut v) => {
            for (cell, x) in v.iter_mut().enumerate() {
                if *x == FILL_F32 {
                    continue;
                }
                let h = noise(1, cell);
                let speckled = h % 8 == 0;
                *x = match var {
                    "precipitationQualityIndex" if speckled => ((h >> 8) % 100) as f32 / 100.0,
                    "precipitationQualityIndex" => *x,
                    "randomError" if *x > 0.0 || speckled => *x + draw(h, 0.4),
                    "randomError" => 0.0,
                    _ if speckled => *x + draw(h, 1.5),
                    _ => *x,
                };
            }
            Field::F32(v)
        }
        Field::I16(mut v) => {
            for (cell, x) in v.iter_mut().enumerate() {
                if *x != FILL_I16 && noise(1, cell) % 8 == 0 {
                    *x = (noise(3, cell) % 101) as i16;
                }
            }
            Field::I16(v)
        }
    }
}

fn smooth_field(var: &str, time_index: u64, n_lon: usize, n_lat: usize) -> Field {
    let rain = rain(time_index, n_lon, n_lat);
    let fill = |lon: usize, lat: usize| is_fill(time_index, lon, lat, n_lon, n_lat);
    let map_f32 = |f: &dyn Fn(usize, usize, f32) -> f32| {
        let mut out = Vec::with_capacity(n_lon * n_lat);
        for lon in 0..n_lon {
            for lat in 0..n_lat {
                out.push(if fill(lon, lat) {
                    FILL_F32
                } else {
                    f(lon, lat, rain[lon * n_lat + lat])
                });
            }
        }
        out
    };
    match var {
        "randomError" => Field::F32(map_f32(&|_, _, r| {
            if r > 0.0 {
                ((r * 0.3 + 0.05) * 100.0).round() / 100.0
            } else {
                0.0
            }
        })),
        "precipitationQualityIndex" => Field::F32(map_f32(&|lon, lat, _| {
            let block = (lon / 60) * 31 + (lat / 60) * 17 + time_index as usize;
            (block % 100) as f32 / 100.0
        })),
        "probabilityLiquidPrecipitation" => {
            let mut out = Vec::with_capacity(n_lon * n_lat);
            for lon in 0..n_lon {
                for lat in 0..n_lat {
                    out.push(if fill(lon, lat) {
                        FILL_I16
                    } else {
                        let polar = lat < n_lat / 5 || lat > n_lat * 4 / 5;
                        match (rain[lon * n_lat + lat] > 0.0, polar) {
                            (true, true) => 20,
                            (true, false) => 100,
                            (false, true) => 0,
                            (false, false) => 50,
                        }
                    });
                }
            }
            Field::I16(out)
        }
        _ => Field::F32(map_f32(&|_, _, r| r)),
    }
}
