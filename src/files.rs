//! File-system helpers every writer shares (model files, logs, plots,
//! recommendation outputs, synthetic data, downloads): a file is written to
//! a temporary file beside its destination and renamed into place, so a
//! crash leaves the old file or the new one, never half of either.
//!
//! Two rules hold for every file seqrec touches:
//! - it writes only regular files: a path that holds a folder, a device
//!   (`/dev/null`), a FIFO or a socket (or a link to one) is refused, both
//!   when the command's arguments are checked (`check_outputs`, before any
//!   work) and again when the file is written (`temp_file_beside`,
//!   `persist`), since the rename would replace whatever sits there; nor
//!   does it write over an input of the run;
//! - a file it reads whole (a config file, an index cache, a batch of
//!   histories) is a regular file, opened without waiting for a FIFO's
//!   writer, and read to a stated bound (`read_bounded`).

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
    refuse_unless_regular(path)?;
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

/// What a file that is not a regular one is, for a message: "a folder",
/// "a FIFO (named pipe)", "a character device"...
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    if t.is_file() {
        return "a regular file";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// What sits at `path` when it is something other than a regular file
/// (links followed): `None` for a regular file or nothing at all (a
/// missing path, a dangling link), which a writer may replace.
pub fn not_a_regular_file(path: &Path) -> Option<&'static str> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Some(kind_of(&meta)),
        _ => None,
    }
}

/// The write-time half of the output rule: an error (for the writer to
/// put its path on) when `path` holds anything but a regular file.
fn refuse_unless_regular(path: &Path) -> std::io::Result<()> {
    match not_a_regular_file(path) {
        None => Ok(()),
        Some(kind) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {kind}, not a regular file; seqrec writes only regular files"),
        )),
    }
}

/// Opens `path` for reading if it is a regular file, and says its length.
/// The open does not wait for a FIFO's writer (`O_NONBLOCK`, harmless on a
/// regular file), and the type is checked on the opened handle, so a FIFO,
/// a device (`/dev/zero`) or a folder is refused at once, whatever was
/// swapped in after a check by name.
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    open_regular_with_metadata(path).map(|(file, meta)| (file, meta.len()))
}

/// `open_regular`, with the opened file's metadata (its identity and times
/// as well as its length).
pub fn open_regular_with_metadata(
    path: &Path,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", kind_of(&meta)),
        ));
    }
    Ok((file, meta))
}

/// Why a file could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Missing, unreadable, or not a regular file (the cause says which).
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {len} bytes, larger than the {} {what} may be", path.display(), size_text(*limit))]
    TooLarge {
        path: std::path::PathBuf,
        len: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("{}: {what} is UTF-8 text, and this is not (at byte {at})", path.display())]
    NotText {
        path: std::path::PathBuf,
        what: &'static str,
        at: usize,
    },
}

impl ReadError {
    /// The I/O error behind it, if any (`NotFound` tells a missing file).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            ReadError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// `bytes` as a message says a size: "64 MiB", "4 KiB", "100 bytes".
pub fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The whole of the regular file `path`, at most `limit` bytes: a larger
/// file is refused before a byte is read (and one that grows past the
/// limit while read, when it does), with a message saying the bound and
/// that `what` ("a config file") may not be larger.
pub fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = |len| ReadError::TooLarge {
        path: path.to_path_buf(),
        len,
        limit,
        what,
    };
    let (file, len) = open_regular(path).map_err(io)?;
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `read_bounded`, as UTF-8 text.
pub fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, ReadError> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| ReadError::NotText {
        path: path.to_path_buf(),
        what,
        at: e.utf8_error().valid_up_to(),
    })
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
    /// A device, FIFO or socket (or a link to one): the rename that puts
    /// the file in place would replace it.
    #[error(
        "{flag} {}: is {kind}; seqrec writes only regular files (it would replace this one), give a file name",
        path.display()
    )]
    NotAFile {
        flag: String,
        path: std::path::PathBuf,
        kind: &'static str,
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
/// written: see `check_output`; and that no two outputs are one file.
/// Finding this out after training would lose the run.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[&Path]) -> Result<(), OutputError> {
    for (i, &(flag, path)) in outputs.iter().enumerate() {
        check_output(flag, path, inputs)?;
        let earlier = outputs[..i]
            .iter()
            .find(|(_, other)| same_destination(path, other));
        if let Some((other, _)) = earlier {
            let other = other.to_string();
            return Err(OutputError::Twice {
                flag: flag.to_string(),
                path: path.to_path_buf(),
                other,
            });
        }
    }
    Ok(())
}

/// The rule for every file seqrec writes, checked before any work: `path`
/// (set by `flag`, a setting's name or a command's flag) is missing or a
/// regular file (not a folder, device, FIFO or socket, nor a link to one),
/// is none of the run's `inputs` (by device and inode, so `./x`, `x`, a
/// link or a hard link to an input are all that input), and its folder
/// exists and takes a new file.
pub fn check_output(flag: &str, path: &Path, inputs: &[&Path]) -> Result<(), OutputError> {
    let (flag, path_buf) = (flag.to_string(), path.to_path_buf());
    if path.is_dir() {
        return Err(OutputError::IsAFolder {
            flag,
            path: path_buf,
        });
    }
    if let Some(kind) = not_a_regular_file(path) {
        return Err(OutputError::NotAFile {
            flag,
            path: path_buf,
            kind,
        });
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(OutputError::NoFolder {
            flag,
            path: path_buf,
            dir: dir.to_path_buf(),
        });
    }
    if let Some(input) = inputs.iter().find(|input| same_file(path, input)) {
        return Err(OutputError::IsAnInput {
            flag,
            path: path_buf,
            input: input.to_path_buf(),
        });
    }
    // The only sure test of a folder's permissions is to try.
    if let Err(source) = temp_file_beside(path) {
        return Err(OutputError::NotWritable {
            flag,
            path: path_buf,
            dir: dir.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// Moves a finished temporary file over `path`, synced and made readable.
/// Refused when `path` is no longer missing or a regular file (it became
/// a FIFO, a device or a folder while the file was written).
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    refuse_unless_regular(path)?;
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
pub(crate) mod tests {
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

    /// A FIFO at `path` (a test's temporary folder).
    #[cfg(unix)]
    pub(crate) fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_written_devices_fifos_and_links_to_them_are_refused() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        mkfifo(&fifo);
        let link = dir.path().join("link-to-null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        for (path, kind) in [
            (Path::new("/dev/null"), "a character device"),
            (Path::new("/dev/full"), "a character device"),
            (fifo.as_path(), "a FIFO (named pipe)"),
            (link.as_path(), "a character device"),
        ] {
            let e = check_outputs(&[("--out", path)], &[]).unwrap_err();
            assert!(matches!(e, OutputError::NotAFile { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "--out {}: is {kind}; seqrec writes only regular files (it would replace this one), give a file name",
                    path.display()
                )
            );
            // The writers' own check, for callers without one (Python's save).
            let e = write_atomically(path, b"model").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert_eq!(
                e.to_string(),
                format!("is {kind}, not a regular file; seqrec writes only regular files")
            );
        }
        // Nothing was replaced, and no temporary file was left.
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        // A regular file, a link to one and a missing path are fine.
        let file = dir.path().join("m.safetensors");
        write_atomically(&file, b"old").unwrap();
        let to_file = dir.path().join("link-to-m");
        std::os::unix::fs::symlink(&file, &to_file).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        for ok in [&file, &to_file, &dangling, &dir.path().join("new")] {
            assert!(check_outputs(&[("--out", ok)], &[]).is_ok(), "{ok:?}");
        }
        write_atomically(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn an_input_is_refused_by_any_of_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ratings.dat");
        std::fs::write(&input, b"1::1::5::1\n").unwrap();
        let hard = dir.path().join("hard-link.dat");
        std::fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft-link.dat");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        let relative = dir.path().join("sub/../ratings.dat");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in [&input, &hard, &soft, &relative] {
            let e = check_outputs(&[("--items", name)], &[&input]).unwrap_err();
            assert!(matches!(e, OutputError::IsAnInput { .. }), "{name:?}: {e}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"1::1::5::1\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_read_whole_is_a_regular_file_read_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        // /dev/zero never ends: refused at once, not read.
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "a config file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: is a character device, not a regular file"
        );
        // A FIFO without a writer: refused at once, not waited on.
        let fifo = dir.path().join("config.toml");
        mkfifo(&fifo);
        let started = std::time::Instant::now();
        let e = read_text(&fifo, 1 << 20, "a config file").unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            e.to_string()
                .ends_with("config.toml: is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        let e = read_bounded(dir.path(), 1 << 20, "a config file").unwrap_err();
        assert!(
            e.to_string().ends_with(": is a folder, not a regular file"),
            "{e}"
        );
        // Larger than the bound: refused, the bound said.
        let big = dir.path().join("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len((1 << 20) + 1)
            .unwrap();
        let e = read_bounded(&big, 1 << 20, "a config file").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: 1048577 bytes, larger than the 1 MiB a config file may be",
                big.display()
            )
        );
        let text = dir.path().join("ok.toml");
        std::fs::write(&text, "epochs = 3\n").unwrap();
        assert_eq!(
            read_text(&text, 1 << 20, "a config file").unwrap(),
            "epochs = 3\n"
        );
        std::fs::write(&text, b"epochs = \xff\n").unwrap();
        let e = read_text(&text, 1 << 20, "a config file").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("a config file is UTF-8 text, and this is not (at byte 9)"),
            "{e}"
        );
        let missing = read_bounded(&dir.path().join("none"), 10, "x").unwrap_err();
        assert_eq!(missing.io_kind(), Some(std::io::ErrorKind::NotFound));
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text(4 << 30), "4 GiB");
        assert_eq!(size_text(1000), "1000 bytes");
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
