//! `seqrec fetch NAME`: download a MovieLens release into the cache (placeholder).

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Dataset name: ml-1m, ml-100k, ml-20m, ml-25m, ml-32m, ml-latest-small.
    pub name: String,
    /// Cache folder [default: the XDG cache dir, seqrec/].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

pub fn fetch(args: FetchArgs, quiet: bool) -> Result<()> {
    let dir = args
        .data_dir
        .unwrap_or_else(crate::data::download::default_cache_dir);
    let out = crate::data::download::ensure(&args.name, &dir, None, !quiet)?;
    println!("{}", out.display());
    Ok(())
}
