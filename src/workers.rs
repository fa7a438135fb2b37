//! Worker threads: the one place a thread count a user gave (a flag, a
//! TOML key, a Python keyword) becomes a rayon pool. 0 means one thread per
//! core; a count is bounded, so a typo (`threads=10**6`) is an error that
//! names the setting instead of spawning threads until the system refuses.

/// The most worker threads a setting may ask for: far beyond any machine
/// this runs on, far below what makes thread creation fail.
pub const MAX_THREADS: usize = 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThreadsError {
    #[error("{setting}: expected 0 (one per core) to {MAX_THREADS}, found {threads}")]
    TooMany { setting: String, threads: usize },
    #[error("cannot start the worker threads: {0}")]
    Start(String),
}

/// The cores this machine lets the process use (1 when it cannot say).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A thread count's own check, for a settings table: 0 (one per core) to
/// `MAX_THREADS`. The message leaves the setting's name to its caller.
pub fn check(threads: &usize) -> Result<(), String> {
    if *threads > MAX_THREADS {
        Err(format!(
            "expected 0 (one per core) to {MAX_THREADS}, found {threads}"
        ))
    } else {
        Ok(())
    }
}

/// The thread count `threads` means (0: one per core), checked against
/// `MAX_THREADS`; `setting` names it in the error.
pub fn count(setting: &str, threads: usize) -> Result<usize, ThreadsError> {
    match threads {
        0 => Ok(cores()),
        n if n > MAX_THREADS => Err(ThreadsError::TooMany {
            setting: setting.to_string(),
            threads: n,
        }),
        n => Ok(n),
    }
}

/// A pool of the threads `threads` means (see `count`), and their number.
pub fn pool(setting: &str, threads: usize) -> Result<(rayon::ThreadPool, usize), ThreadsError> {
    named_pool(setting, threads, None)
}

/// `pool`, its threads named `{name}-{i}` where a name is given (they show
/// in `top -H` and in a debugger).
pub fn named_pool(
    setting: &str,
    threads: usize,
    name: Option<&'static str>,
) -> Result<(rayon::ThreadPool, usize), ThreadsError> {
    let threads = count(setting, threads)?;
    let mut builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    if let Some(name) = name {
        builder = builder.thread_name(move |i| format!("{name}-{i}"));
    }
    let pool = builder
        .build()
        .map_err(|e| ThreadsError::Start(e.to_string()))?;
    Ok((pool, threads))
}

/// A warning when `threads` (0: one per core) is more than this machine
/// has cores: each step's work is split finer than the cores can run it,
/// and training slows by up to two orders of magnitude.
pub fn oversubscription_warning(setting: &str, threads: usize) -> Option<String> {
    let cores = cores();
    (threads > cores).then(|| {
        format!(
            "warning: {setting} {threads} is more than the {cores} core(s) this machine has; \
             this runs slower, not faster (0 uses one thread per core)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_cores_for_zero_and_bounded_above() {
        assert_eq!(count("threads", 0), Ok(cores()));
        assert_eq!(count("threads", 3), Ok(3));
        assert_eq!(count("threads", MAX_THREADS), Ok(MAX_THREADS));
        let err = count("score_threads", 1_000_000).unwrap_err().to_string();
        assert!(
            err.contains("score_threads") && err.contains("1000000") && err.contains("1024"),
            "{err}"
        );
        let (pool, n) = named_pool("threads", 2, Some("seqrec-test")).unwrap();
        assert_eq!((n, pool.current_num_threads()), (2, 2));
        let name = pool.install(|| std::thread::current().name().map(str::to_string));
        assert!(name.is_some_and(|n| n.starts_with("seqrec-test-")));
    }

    #[test]
    fn only_more_threads_than_cores_is_warned_about() {
        assert!(oversubscription_warning("threads", cores()).is_none());
        assert!(oversubscription_warning("threads", 0).is_none());
        let w = oversubscription_warning("--threads", cores() + 1).unwrap();
        assert!(w.starts_with("warning: --threads"), "{w}");
    }
}
