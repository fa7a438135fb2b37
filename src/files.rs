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

/// Temporary files are named `.seqrec-HOST-PID-XXXXXX.tmp`: obviously
/// seqrec's, and naming the machine and process that write them, so a
/// later run can tell one left by a killed run from one still being
/// written (by this machine or another sharing the folder).
const TEMP_PREFIX: &str = ".seqrec-";
const TEMP_SUFFIX: &str = ".tmp";

/// A temporary file left this long unmodified by a writer that is gone is
/// abandoned; a younger one may belong to a writer in another PID
/// namespace (a container) of the same host name.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// This machine's name as it goes in a temporary file's name: letters,
/// digits and dots only, at most 40 of them.
fn host_tag() -> String {
    let mut buf = [0u8; 256];
    #[cfg(unix)]
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    #[cfg(not(unix))]
    let ok = false;
    let name: String = if ok {
        buf.iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .take(40)
            .collect()
    } else {
        String::new()
    };
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

/// A temporary file beside `path`, named so it is obviously seqrec's. Any
/// temporary file a killed seqrec left in that folder goes first.
pub fn temp_file_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    temp_file_named(path, TEMP_SUFFIX)
}

/// `temp_file_beside`, with a name ending in `.EXTENSION` for writers that
/// pick a format by the name (`.seqrec-HOST-PID-XXXXXX.tmp.png`).
pub fn temp_file_beside_as(
    path: &Path,
    extension: &str,
) -> std::io::Result<tempfile::NamedTempFile> {
    temp_file_named(path, &format!("{TEMP_SUFFIX}.{extension}"))
}

fn temp_file_named(path: &Path, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    remove_abandoned_temp_files(dir);
    let prefix = format!("{TEMP_PREFIX}{}-{}-", host_tag(), std::process::id());
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(suffix)
        .tempfile_in(dir)
}

/// Removes the temporary files in `dir` that this machine's seqrec wrote,
/// whose writer is no longer running (killed between writing and
/// renaming) and which have not changed for `ABANDONED_AFTER`. Best
/// effort: a folder that cannot be listed, or a file that cannot be
/// removed, is left alone.
pub fn remove_abandoned_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let host = host_tag();
    // A folder of millions of files is not ours to walk on every write.
    for entry in entries.flatten().take(100_000) {
        let name = entry.file_name();
        let Some((writer_host, pid)) = name.to_str().and_then(temp_file_writer) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let idle = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= ABANDONED_AFTER);
        if writer_host == host && idle && meta.is_file() && !process_is_running(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The writer's host and process id, for a name made by
/// `temp_file_beside`.
fn temp_file_writer(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    // `.tmp`, or `.tmp.EXT` (`temp_file_beside_as`).
    let end = rest.rfind(TEMP_SUFFIX)?;
    let ext = &rest[end + TEMP_SUFFIX.len()..];
    if !(ext.is_empty()
        || ext.starts_with('.') && ext[1..].chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return None;
    }
    let mut parts = rest[..end].rsplitn(3, '-');
    let (random, pid, host) = (parts.next()?, parts.next()?, parts.next()?);
    if random.is_empty() || host.is_empty() {
        return None;
    }
    Some((host, pid.parse().ok()?))
}

fn process_is_running(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // Signal 0 checks existence; EPERM means it exists as another user's.
        // SAFETY: kill with signal 0 sends nothing.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Whether `a` and `b` name the same existing file (through links, `..`
/// or hard links alike).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

/// Whether two outputs would be written to one file: the same existing
/// file, or the same name in the same folder (`m` and `./m`, `d/../m`),
/// which need not exist yet.
fn same_destination(a: &Path, b: &Path) -> bool {
    if a == b || same_file(a, b) {
        return true;
    }
    let folder = |p: &Path| parent_dir(p).canonicalize().ok();
    a.file_name().is_some()
        && a.file_name() == b.file_name()
        && folder(a).is_some()
        && folder(a) == folder(b)
}

/// Why an output cannot be written where it was asked for.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{flag} {}: the folder {} does not exist", path.display(), dir.display())]
    NoFolder {
        flag: String,
        path: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
    #[error("{flag} {}: is a folder; give a file name", path.display())]
    IsAFolder {
        flag: String,
        path: std::path::PathBuf,
    },
    #[error("{flag} {}: is the input {}; seqrec never writes over its input, give another name", path.display(), input.display())]
    IsAnInput {
        flag: String,
        path: std::path::PathBuf,
        input: std::path::PathBuf,
    },
    #[error("{flag} {}: is also {other}; give each output its own file", path.display())]
    Twice {
        flag: String,
        path: std::path::PathBuf,
        other: String,
    },
    #[error("{flag} {}: cannot create a file in {}", path.display(), dir.display())]
    NotWritable {
        flag: String,
        path: std::path::PathBuf,
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks, before any work, that each output (`(flag, path)`) can be
/// written: its folder exists and takes a new file, it is not a folder,
/// not an input, and not another output. Finding this out after training
/// would lose the run.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[&Path]) -> Result<(), OutputError> {
    for (i, &(flag, path)) in outputs.iter().enumerate() {
        let named = |path: &Path| (flag.to_string(), path.to_path_buf());
        if path.is_dir() {
            let (flag, path) = named(path);
            return Err(OutputError::IsAFolder { flag, path });
        }
        let dir = parent_dir(path);
        if !dir.is_dir() {
            let (flag, path) = named(path);
            let dir = dir.to_path_buf();
            return Err(OutputError::NoFolder { flag, path, dir });
        }
        if let Some(input) = inputs.iter().find(|input| same_file(path, input)) {
            let (flag, path) = named(path);
            let input = input.to_path_buf();
            return Err(OutputError::IsAnInput { flag, path, input });
        }
        let earlier = outputs[..i]
            .iter()
            .find(|(_, other)| same_destination(path, other));
        if let Some((other, _)) = earlier {
            let (flag, path) = named(path);
            let other = other.to_string();
            return Err(OutputError::Twice { flag, path, other });
        }
        // The only sure test of a folder's permissions is to try.
        if let Err(source) = temp_file_beside(path) {
            let (flag, path) = named(path);
            let dir = dir.to_path_buf();
            return Err(OutputError::NotWritable {
                flag,
                path,
                dir,
                source,
            });
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_left_by_a_dead_process_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let host = host_tag();
        let file = |name: &str, minutes_old: u64| {
            let p = dir.path().join(name);
            let f = std::fs::File::create(&p).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(60 * minutes_old);
            f.set_modified(t).unwrap();
            p
        };
        // No process has pid 2^22 + 1 (above Linux's pid_max limit).
        let abandoned = file(&format!(".seqrec-{host}-4194305-AbC123.tmp"), 10);
        let abandoned_plot = file(&format!(".seqrec-{host}-4194305-XyZ789.tmp.png"), 10);
        let own = file(
            &format!(".seqrec-{host}-{}-live00.tmp", std::process::id()),
            10,
        );
        // A writer gone from this machine's view, but just now active: maybe
        // in another container.
        let recent = file(&format!(".seqrec-{host}-4194305-New000.tmp"), 0);
        // Another machine's, sharing the folder: its pids are not ours.
        let other_host = file(".seqrec-elsewhere.example-4194305-Oth000.tmp", 10);
        let not_ours = file(".seqrec-notes.tmp", 10);
        write_atomically(&dir.path().join("model.safetensors"), b"new").unwrap();
        assert!(!abandoned.exists(), "the dead writer's file stays");
        assert!(!abandoned_plot.exists(), "the dead writer's plot stays");
        for kept in [&own, &recent, &other_host, &not_ours] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    }

    #[test]
    fn outputs_are_checked_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ratings.dat");
        std::fs::write(&input, b"1::1::5::1\n").unwrap();
        let out = dir.path().join("model.safetensors");
        let ok = check_outputs(&[("--out", &out)], &[&input]);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the check left a file"
        );

        let e = check_outputs(&[("--out", &input)], &[&input]).unwrap_err();
        assert!(matches!(e, OutputError::IsAnInput { .. }), "{e}");
        // The same file by another name.
        let dotted = dir.path().join(".").join("ratings.dat");
        let e = check_outputs(&[("--log", &dotted)], &[&input]).unwrap_err();
        assert!(e.to_string().starts_with("--log "), "{e}");

        let e = check_outputs(&[("--out", dir.path())], &[]).unwrap_err();
        assert!(matches!(e, OutputError::IsAFolder { .. }), "{e}");
        let e = check_outputs(&[("--out", &dir.path().join("no/such/m"))], &[]).unwrap_err();
        assert!(matches!(e, OutputError::NoFolder { .. }), "{e}");
        let e = check_outputs(&[("--out", &out), ("--log", &out)], &[]).unwrap_err();
        assert!(
            matches!(e, OutputError::Twice { .. }) && e.to_string().contains("--out"),
            "{e}"
        );
        // One new file by two names.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let other_name = dir.path().join("sub/../model.safetensors");
        let e = check_outputs(&[("--out", &out), ("--log", &other_name)], &[]).unwrap_err();
        assert!(matches!(e, OutputError::Twice { .. }), "{e}");
        let elsewhere = dir.path().join("sub/model.safetensors");
        assert!(check_outputs(&[("--out", &out), ("--log", &elsewhere)], &[]).is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_output_in_a_folder_that_takes_no_file_is_refused() {
        // /proc takes no new file, whoever asks (root ignores permission bits,
        // so a read-only folder would not test this as root).
        let r = check_outputs(&[("--plot", Path::new("/proc/seqrec-plot.png"))], &[]);
        assert!(matches!(r, Err(OutputError::NotWritable { .. })), "{r:?}");
        assert!(r
            .unwrap_err()
            .to_string()
            .starts_with("--plot /proc/seqrec-plot.png: cannot create a file in /proc"));
    }
}
