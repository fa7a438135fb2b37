//! `seqrec synth OUT_DIR`: synthetic data (placeholder).

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Folder to write ratings.dat and movies.dat into.
    pub out_dir: std::path::PathBuf,
}

pub fn synth(args: SynthArgs, _quiet: bool) -> Result<()> {
    anyhow::bail!("synth {}: not implemented yet", args.out_dir.display())
}
