fn main() {
    std::process::exit(seqrec::cli::main());
}
