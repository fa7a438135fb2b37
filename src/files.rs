//! File-system helpers every writer shares (model files, logs, plots,
//! recommendation outputs, synthetic data, downloads): a file is written to
//! a temporary file beside its destination and renamed into place, so a
//! crash leaves the old file or the new one, never half of either.

use std::io::Write;
use std::path::Path;

/// Temporary files are created private (0600); a model, log or plot is
/// meant to be read by others (a service running as another user), so it
/// gets the usual 0644 before it is renamed into place.
pub fn readable_by_all(file: &std::fs::File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// The folder a file goes in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary file beside `path`, named so it is obviously seqrec's.
pub fn temp_file_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".seqrec-")
        .suffix(".tmp")
        .tempfile_in(parent_dir(path))
}

/// Moves a finished temporary file over `path`, synced and made readable.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.as_file().sync_all()?;
    readable_by_all(tmp.as_file());
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

/// Writes `bytes` to `path` atomically (see the module header).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(bytes)?;
    persist(tmp, path)
}
