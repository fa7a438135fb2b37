//! `seqrec serve MODEL`: the HTTP service (see `crate::serve` and docs/serve.md).

use anyhow::Result;

use crate::serve::{self, ServeConfig, ServeError};

/// `seqrec serve MODEL [FLAGS]`: `ServeConfig` is the flags' one
/// definition (defaults, docs); the library checks the values.
pub fn serve(cfg: ServeConfig, _quiet: bool) -> Result<()> {
    serve::run(cfg).map_err(|e| match e {
        // Say which flag chose the address.
        ServeError::Listen { addr, source } => {
            anyhow::Error::new(source).context(format!("cannot listen on {addr} (--addr)"))
        }
        // The library names `ServeConfig`'s fields; here, the flags.
        ServeError::Setting { key, message } => {
            anyhow::anyhow!("{}: {message}", serve_flag(key))
        }
        ServeError::AdminWithoutToken => {
            anyhow::anyhow!("--admin: the admin routes need a bearer token: give --token-file FILE")
        }
        ServeError::Token { path, why } => {
            anyhow::anyhow!("{path}: the token file (--token-file) is refused: {why}")
        }
        e => e.into(),
    })
}

/// The flag that sets a `ServeConfig` field: durations take their unit in
/// the flag's name (`body_timeout` is `--body-timeout-s`).
fn serve_flag(key: &str) -> String {
    match key {
        "body_timeout" | "header_timeout" | "idle_timeout" | "shutdown_grace" => {
            format!("{}-s", super::flag(key))
        }
        "batch_window" => "--batch-window-us".into(),
        key => super::flag(key),
    }
}
