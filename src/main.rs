fn main() {
    // Exit quietly when stdout is closed early (`seqrec ... | head`), as
    // command-line tools do, instead of failing on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread
    // starts has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(seqrec::cli::main());
}
