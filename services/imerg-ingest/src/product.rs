//! The `--product` / `--product-profile` options shared by every subcommand.

use anyhow::Context as _;
use imerg_catalog::ProductProfile;

#[derive(Debug, clap::Args)]
pub struct ProductArgs {
    /// Built-in product profile: `final` (Final run, half-hourly, V07B), `late` or `early`.
    #[arg(long, env = "IMERG_PRODUCT", default_value = "final", global = true)]
    pub product: String,
    /// A product profile as JSON (overrides --product); see docs/product-profiles.md.
    #[arg(long, env = "IMERG_PRODUCT_PROFILE", global = true)]
    pub product_profile: Option<std::path::PathBuf>,
}

impl ProductArgs {
    pub fn load(&self) -> anyhow::Result<ProductProfile> {
        match &self.product_profile {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading product profile {}", path.display()))?;
                ProductProfile::from_json(&text)
                    .with_context(|| format!("parsing product profile {}", path.display()))
            }
            None => Ok(ProductProfile::builtin(&self.product)?),
        }
    }
}
