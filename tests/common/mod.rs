//! Running the `seqrec` binary from integration tests.
#![allow(dead_code)]

use std::process::{Command, Output};

pub fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("the seqrec binary runs")
}

/// Runs `seqrec args`, which must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = seqrec(args);
    assert!(
        out.status.success(),
        "seqrec {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `seqrec args`, which must fail without panicking; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = seqrec(args);
    assert!(!out.status.success(), "seqrec {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `seqrec synth DIR/data` of `users` x `items` with `ratings` lines and
/// `seed`; returns the data folder.
pub fn synth_data(
    dir: &std::path::Path,
    users: usize,
    items: usize,
    ratings: usize,
    seed: u64,
) -> std::path::PathBuf {
    let data = dir.join("data");
    let [users, items, ratings, seed] =
        [users, items, ratings, seed as usize].map(|n| n.to_string());
    ok(&[
        "--quiet",
        "synth",
        data.to_str().unwrap(),
        "--users",
        &users,
        "--items",
        &items,
        "--ratings",
        &ratings,
        "--seed",
        &seed,
    ]);
    data
}

/// `seqrec --quiet train DATA --out OUT --epochs 1 EXTRA...`; its stdout.
pub fn train_one_epoch(data: &str, out: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![
        "--quiet",
        "train",
        data,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

/// A FIFO (named pipe) at `path`.
pub fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs `seqrec args`, killed if it has not finished within `seconds`
/// (a read that waits on a FIFO): its output, and whether it finished.
pub fn seqrec_within(args: &[&str], seconds: u64) -> (Output, bool) {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the seqrec binary runs");
    let started = std::time::Instant::now();
    let mut finished = true;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(seconds) {
            let _ = child.kill();
            finished = false;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), finished)
}
