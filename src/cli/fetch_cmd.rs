//! `seqrec fetch NAME`: download a MovieLens release into the cache.

use anyhow::Result;
use clap::Args;

use crate::data::download;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Dataset name: ml-1m, ml-100k, ml-20m, ml-25m, ml-32m, ml-latest-small.
    pub name: String,
    /// Cache folder [default: the XDG cache dir, seqrec/].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Base URL to download `<name>.zip` from instead of GroupLens
    /// [default: $SEQREC_MIRROR, else https://files.grouplens.org/datasets/movielens].
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
}

/// Fetches the dataset (if not cached yet) and prints its folder on stdout.
pub fn fetch(args: FetchArgs, quiet: bool) -> Result<()> {
    let dir = args.data_dir.unwrap_or_else(download::default_cache_dir);
    let out = download::ensure(&args.name, &dir, args.mirror.as_deref(), !quiet).map_err(|e| {
        let offline = e.is_unreachable();
        let e = anyhow::Error::new(e);
        if offline {
            e.context(format!(
                "offline? unzip {}.zip yourself and pass its folder to seqrec commands (e.g. `seqrec train path/to/{}`), or use --mirror URL",
                args.name, args.name
            ))
        } else {
            e
        }
    })?;
    println!("{}", out.display());
    Ok(())
}
