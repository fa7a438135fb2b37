//! Downloading and extracting datasets against a local HTTP server: each test
//! starts its own tiny HTTP/1.1 server on 127.0.0.1 that answers a fixed list
//! of requests with zips built in memory, then stops listening.

use std::fs;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use seqrec::data::download::{
    download_and_extract, ensure, ensure_dataset, find_dataset, safe_relative_path, DownloadError,
    KnownDataset, KNOWN_DATASETS, MAX_ENTRIES, MAX_EXPANSION, MIRROR_ENV_VAR,
};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

const RATINGS: &str = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n";
const MOVIES: &str = "1::Toy Story (1995)::Animation|Children's|Comedy\n661::James and the Giant Peach (1996)::Animation\n";

/// An error and its causes on one line, as the command line reports them.
fn with_causes(err: &DownloadError) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What the server sends for one request.
enum Reply {
    /// 200 with the body and a correct Content-Length.
    Body(Vec<u8>),
    /// 200 claiming `claimed` bytes, then only `body` and a closed connection.
    Truncated { claimed: usize, body: Vec<u8> },
    /// 404 Not Found.
    NotFound,
}

struct TestServer {
    base_url: String,
    /// Request paths, in the order they arrived.
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Serves one connection per reply, then stops listening, so a request
    /// beyond the planned ones is refused rather than answered.
    fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        thread::spawn(move || {
            for reply in replies {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                serve_one(stream, reply, &seen);
            }
        });
        TestServer {
            base_url: format!("http://127.0.0.1:{port}"),
            requests,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("request log").clone()
    }
}

fn serve_one(mut stream: TcpStream, reply: Reply, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers, up to the blank line.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    seen.lock().expect("request log").push(path);

    let (head, body) = match reply {
        Reply::Body(body) => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            body,
        ),
        Reply::Truncated { claimed, body } => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
            ),
            body,
        ),
        Reply::NotFound => (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
                .to_string(),
            Vec::new(),
        ),
    };
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A zip with the given (name, contents) entries; names ending in `/` are folders.
fn build_zip(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, contents) in entries {
        if name.ends_with('/') {
            writer.add_directory(*name, options).expect("add folder");
        } else {
            writer.start_file(*name, options).expect("start entry");
            writer.write_all(contents.as_bytes()).expect("write entry");
        }
    }
    writer.finish().expect("finish zip").into_inner()
}

fn movielens_zip(folder: &str) -> Vec<u8> {
    build_zip(&[
        (&format!("{folder}/"), ""),
        (&format!("{folder}/ratings.dat"), RATINGS),
        (&format!("{folder}/movies.dat"), MOVIES),
    ])
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A release named `name` whose recorded sum is that of `zip` (the real
/// releases' sums cannot match a zip built here).
fn release(name: &'static str, zip: &[u8]) -> KnownDataset {
    KnownDataset {
        name,
        zip_name: leak(format!("{name}.zip")),
        folder: name,
        sha256: leak(sha256_hex(zip)),
        size: None,
    }
}

/// Sorted names directly inside `dir` (empty if it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn right_hash_extracts_files_and_leaves_no_temporaries() {
    let zip = movielens_zip("ml-1m");
    let hash = sha256_hex(&zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let dest = cache.path().join("ml-1m");

    let url = format!("{}/ml-1m.zip", server.base_url);
    download_and_extract(&url, Some(&hash), &dest, false).expect("download succeeds");

    assert_eq!(
        fs::read_to_string(dest.join("ratings.dat")).expect("ratings.dat"),
        RATINGS
    );
    assert_eq!(
        fs::read_to_string(dest.join("movies.dat")).expect("movies.dat"),
        MOVIES
    );
    assert_eq!(names_in(cache.path()), vec!["ml-1m"]);
    assert_eq!(server.requests(), vec!["/ml-1m.zip"]);
}

#[test]
fn upper_case_expected_hash_is_accepted() {
    let zip = movielens_zip("ml-1m");
    let hash = sha256_hex(&zip).to_ascii_uppercase();
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let dest = cache.path().join("ml-1m");

    let url = format!("{}/ml-1m.zip", server.base_url);
    download_and_extract(&url, Some(&hash), &dest, false).expect("download succeeds");
    assert!(dest.join("ratings.dat").is_file());
}

#[test]
fn ensure_returns_early_when_the_folder_exists() {
    let zip = movielens_zip("ml-1m");
    let hash = sha256_hex(&zip);
    // One reply only: any further request finds nobody listening.
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/ml-1m.zip", server.base_url);
    download_and_extract(&url, Some(&hash), &cache.path().join("ml-1m"), false)
        .expect("first download succeeds");
    assert_eq!(server.requests().len(), 1);

    for _ in 0..2 {
        let folder = ensure("ml-1m", cache.path(), Some(&server.base_url), false)
            .expect("cached dataset is found");
        assert_eq!(folder, cache.path().join("ml-1m"));
    }
    assert_eq!(server.requests().len(), 1, "ensure must not download again");
    assert_eq!(names_in(cache.path()), vec!["ml-1m"]);
}

#[test]
fn ensure_downloads_a_dataset_once() {
    let zip = movielens_zip("ml-100k");
    let dataset = release("ml-100k", &zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");

    let first = ensure_dataset(&dataset, cache.path(), Some(&server.base_url), false)
        .expect("first fetch succeeds");
    assert_eq!(first, cache.path().join("ml-100k"));
    assert_eq!(
        fs::read_to_string(first.join("ratings.dat")).expect("ratings.dat"),
        RATINGS
    );

    let second = ensure_dataset(&dataset, cache.path(), Some(&server.base_url), false)
        .expect("second fetch succeeds");
    assert_eq!(second, first);
    assert_eq!(server.requests(), vec!["/ml-100k.zip"]);
    assert_eq!(names_in(cache.path()), vec!["ml-100k"]);
}

#[test]
fn mirror_with_trailing_slash_builds_the_right_url() {
    let zip = movielens_zip("ml-latest-small");
    let dataset = release("ml-latest-small", &zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let mirror = format!("{}/", server.base_url);
    ensure_dataset(&dataset, cache.path(), Some(&mirror), false).expect("fetch succeeds");
    assert_eq!(server.requests(), vec!["/ml-latest-small.zip"]);
}

#[test]
fn mirror_comes_from_the_environment_when_not_given() {
    let zip = movielens_zip("ml-25m");
    let dataset = release("ml-25m", &zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    // Every other test passes its mirror explicitly, so setting this
    // process-wide variable cannot redirect them.
    std::env::set_var(MIRROR_ENV_VAR, &server.base_url);
    let result = ensure_dataset(&dataset, cache.path(), None, false);
    std::env::remove_var(MIRROR_ENV_VAR);

    let folder = result.expect("fetch through SEQREC_MIRROR succeeds");
    assert!(folder.join("movies.dat").is_file());
    assert_eq!(server.requests(), vec!["/ml-25m.zip"]);
}

#[test]
fn ml_1m_with_wrong_hash_is_rejected_and_leaves_nothing() {
    let server = TestServer::start(vec![Reply::Body(movielens_zip("ml-1m"))]);
    let cache = tempfile::tempdir().expect("tempdir");

    let err = ensure("ml-1m", cache.path(), Some(&server.base_url), false)
        .expect_err("a zip that is not the real ml-1m must be rejected");
    let message = with_causes(&err);
    assert!(message.contains("SHA-256 mismatch"), "{message}");
    let real_hash = find_dataset("ml-1m").expect("ml-1m is known").sha256;
    assert!(message.contains(real_hash), "{message}");
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn custom_wrong_hash_is_rejected_and_leaves_nothing() {
    let zip = movielens_zip("ml-1m");
    let actual = sha256_hex(&zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let wrong = "0".repeat(64);

    let url = format!("{}/ml-1m.zip", server.base_url);
    let err = download_and_extract(&url, Some(&wrong), &cache.path().join("ml-1m"), false)
        .expect_err("wrong hash must fail");
    let message = with_causes(&err);
    assert!(
        message.contains(&format!(
            "SHA-256 mismatch for {url}: expected {wrong}, got {actual}"
        )),
        "{message}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn malformed_expected_hash_is_rejected_before_downloading() {
    let server = TestServer::start(vec![Reply::Body(movielens_zip("ml-1m"))]);
    let cache = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/ml-1m.zip", server.base_url);
    let err = download_and_extract(&url, Some("abc"), &cache.path().join("ml-1m"), false)
        .expect_err("a 3-digit hash is not a SHA-256");
    assert!(
        with_causes(&err).contains("64 hex digits"),
        "{}",
        with_causes(&err)
    );
    assert!(server.requests().is_empty());
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn truncated_body_is_reported_and_leaves_nothing() {
    let zip = movielens_zip("ml-1m");
    let half = zip[..zip.len() / 2].to_vec();
    let sent = half.len();
    let claimed = zip.len();
    let server = TestServer::start(vec![Reply::Truncated {
        claimed,
        body: half,
    }]);
    let cache = tempfile::tempdir().expect("tempdir");

    let err = ensure("ml-100k", cache.path(), Some(&server.base_url), false)
        .expect_err("a short body must fail");
    let message = with_causes(&err);
    assert!(
        message.contains(&format!("expected {claimed} bytes, got {sent}")),
        "{message}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn not_found_names_status_and_url() {
    let server = TestServer::start(vec![Reply::NotFound]);
    let cache = tempfile::tempdir().expect("tempdir");

    let err =
        ensure("ml-32m", cache.path(), Some(&server.base_url), false).expect_err("404 must fail");
    let message = with_causes(&err);
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(
        message.contains(&format!("{}/ml-32m.zip", server.base_url)),
        "{message}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn unreachable_mirror_is_an_error() {
    // Bind then drop a listener so the port is (almost surely) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let cache = tempfile::tempdir().expect("tempdir");
    let mirror = format!("http://127.0.0.1:{port}");
    let err =
        ensure("ml-20m", cache.path(), Some(&mirror), false).expect_err("nobody is listening");
    assert!(
        with_causes(&err).contains(&format!("{mirror}/ml-20m.zip")),
        "{}",
        with_causes(&err)
    );
    assert!(err.is_unreachable(), "{err:?}");
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn unknown_dataset_lists_known_names() {
    let parent = tempfile::tempdir().expect("tempdir");
    let cache = parent.path().join("cache");

    let err = ensure("ml-2m", &cache, Some("http://127.0.0.1:9"), false)
        .expect_err("ml-2m does not exist");
    let message = with_causes(&err);
    assert!(
        matches!(err, DownloadError::UnknownDataset { .. }),
        "{err:?}"
    );
    assert!(!err.is_unreachable());
    assert!(message.contains("unknown dataset \"ml-2m\""), "{message}");
    for dataset in KNOWN_DATASETS {
        assert!(message.contains(dataset.name), "{message}");
    }
    assert!(!cache.exists(), "an unknown name must not create the cache");
}

#[test]
fn body_that_is_not_a_zip_is_rejected_and_leaves_nothing() {
    let html = b"<html>maintenance</html>".to_vec();
    let dataset = release("ml-100k", &html);
    let server = TestServer::start(vec![Reply::Body(html)]);
    let cache = tempfile::tempdir().expect("tempdir");

    let err = ensure_dataset(&dataset, cache.path(), Some(&server.base_url), false)
        .expect_err("html is not a zip");
    assert!(
        with_causes(&err).contains("not a readable zip"),
        "{}",
        with_causes(&err)
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn archive_without_the_dataset_folder_is_rejected() {
    let zip = build_zip(&[("ratings.dat", RATINGS)]);
    let dataset = release("ml-100k", &zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");

    let err = ensure_dataset(&dataset, cache.path(), Some(&server.base_url), false)
        .expect_err("no ml-100k/ folder inside");
    let message = with_causes(&err);
    assert!(
        message.contains("no top-level folder 'ml-100k/'"),
        "{message}"
    );
    assert!(message.contains("ratings.dat"), "{message}");
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn zip_slip_entries_are_refused() {
    let outer = tempfile::tempdir().expect("tempdir");
    let cache = outer.path().join("cache");
    let absolute = outer.path().join("absolute.txt");
    let absolute_name = absolute.to_string_lossy().into_owned();

    for evil_name in [
        "../escaped.txt",
        "ml-100k/../../escaped.txt",
        &absolute_name,
    ] {
        let zip = build_zip(&[("ml-100k/ratings.dat", RATINGS), (evil_name, "pwned")]);
        let dataset = release("ml-100k", &zip);
        let server = TestServer::start(vec![Reply::Body(zip)]);
        let err = ensure_dataset(&dataset, &cache, Some(&server.base_url), false)
            .expect_err("an escaping entry must be refused");
        let message = with_causes(&err);
        assert!(message.contains("unsafe path"), "{message}");
        assert!(message.contains(evil_name), "{message}");
        assert_eq!(names_in(&cache), Vec::<String>::new());
        assert!(!outer.path().join("escaped.txt").exists());
        assert!(!absolute.exists());
    }
}

#[test]
fn safe_relative_path_accepts_plain_paths_only() {
    assert_eq!(
        safe_relative_path("ml-1m/ratings.dat"),
        Some(Path::new("ml-1m").join("ratings.dat"))
    );
    assert_eq!(
        safe_relative_path("./ml-1m//users.dat"),
        Some(Path::new("ml-1m").join("users.dat"))
    );
    for bad in [
        "/etc/passwd",
        "\\windows\\evil",
        "../x",
        "a/../../x",
        "a\\..\\x",
        "C:/x",
        "a\0b",
    ] {
        assert_eq!(safe_relative_path(bad), None, "{bad:?}");
    }
}

#[test]
fn fetch_command_refuses_a_release_that_is_not_the_recorded_one() {
    // Every release seqrec fetches has a recorded SHA-256, ml-100k included:
    // a mirror serving anything else is refused before it is unpacked.
    let server = TestServer::start(vec![Reply::Body(movielens_zip("ml-100k"))]);
    let cache = tempfile::tempdir().expect("tempdir");

    let output = Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(["--quiet", "fetch", "ml-100k", "--data-dir"])
        .arg(cache.path())
        .args(["--mirror", &server.base_url])
        .env_remove(MIRROR_ENV_VAR)
        .output()
        .expect("run seqrec");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "stderr: {stderr}");
    assert!(output.stdout.is_empty());
    let want = find_dataset("ml-100k").expect("ml-100k is known").sha256;
    assert!(
        stderr.contains("SHA-256 mismatch") && stderr.contains(want),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("WITHOUT integrity verification"),
        "{stderr}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn every_release_has_a_well_formed_sum_and_ml_latest_says_why_it_has_none() {
    for d in KNOWN_DATASETS {
        assert_eq!(d.sha256.len(), 64, "{}", d.name);
        assert!(
            d.sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{}",
            d.name
        );
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let err = ensure("ml-latest", cache.path(), Some("http://127.0.0.1:9"), false)
        .expect_err("ml-latest has no fixed sum");
    let message = with_causes(&err);
    assert!(
        message.contains("no fixed SHA-256") && message.contains("pass its folder"),
        "{message}"
    );
}

/// A zip holding `folder/ratings.dat` and `bytes` zeros in `folder/big.dat`:
/// a few KB that unpack to `bytes`.
fn bomb(folder: &str, bytes: usize) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(bytes >= u32::MAX as usize);
    writer
        .start_file(format!("{folder}/ratings.dat"), options)
        .expect("start entry");
    writer.write_all(RATINGS.as_bytes()).expect("write entry");
    writer
        .start_file(format!("{folder}/big.dat"), options)
        .expect("start entry");
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len());
        writer.write_all(&zeros[..n]).expect("write entry");
        left -= n;
    }
    writer.finish().expect("finish zip").into_inner()
}

#[test]
fn an_archive_that_unpacks_far_beyond_its_size_is_refused_and_leaves_nothing() {
    // 30 MB of zeros deflate to about 30 KB: a thousand to one.
    let zip = bomb("ml-100k", 30 << 20);
    assert!(
        (zip.len() as u64) * MAX_EXPANSION < 30 << 20,
        "{}",
        zip.len()
    );
    let hash = sha256_hex(&zip);
    for sum in [None, Some(hash.as_str())] {
        let server = TestServer::start(vec![Reply::Body(zip.clone())]);
        let cache = tempfile::tempdir().expect("tempdir");
        let url = format!("{}/ml-100k.zip", server.base_url);
        let err = download_and_extract(&url, sum, &cache.path().join("ml-100k"), false)
            .expect_err("a zip bomb must be refused, verified or not");
        let message = with_causes(&err);
        assert!(
            message.contains("unpacks to more than") && message.contains("zip bomb"),
            "{message}"
        );
        assert_eq!(names_in(cache.path()), Vec::<String>::new());
    }
    // The same shape within the ratio unpacks.
    let fine = bomb("ml-100k", 1000);
    let server = TestServer::start(vec![Reply::Body(fine)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/ml-100k.zip", server.base_url);
    download_and_extract(&url, None, &cache.path().join("ml-100k"), false)
        .expect("a modest archive unpacks");
    assert_eq!(
        fs::metadata(cache.path().join("ml-100k/big.dat"))
            .expect("big.dat")
            .len(),
        1000
    );
}

#[test]
fn an_archive_with_too_many_entries_is_refused() {
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("ml-100k/f{i}")).collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "")).collect();
    let zip = build_zip(&entries);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/ml-100k.zip", server.base_url);
    let err = download_and_extract(&url, None, &cache.path().join("ml-100k"), false)
        .expect_err("too many entries");
    let message = with_causes(&err);
    assert!(
        message.contains(&format!("more than {MAX_ENTRIES} entries")),
        "{message}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn a_download_larger_than_its_release_is_cut_off() {
    let zip = movielens_zip("ml-100k");
    let mut dataset = release("ml-100k", &zip);
    dataset.size = Some(zip.len() as u64 - 1);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let err = ensure_dataset(&dataset, cache.path(), Some(&server.base_url), false)
        .expect_err("one byte too many");
    let message = with_causes(&err);
    assert!(
        message.contains(&format!(
            "larger than the {} bytes allowed",
            dataset.size.unwrap()
        )),
        "{message}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn a_download_announcing_more_than_the_limit_is_refused_unread() {
    let server = TestServer::start(vec![Reply::Truncated {
        claimed: 3 << 30,
        body: b"PK".to_vec(),
    }]);
    let cache = tempfile::tempdir().expect("tempdir");
    let url = format!("{}/ml-100k.zip", server.base_url);
    let err = download_and_extract(&url, None, &cache.path().join("ml-100k"), false)
        .expect_err("3 GiB is over the limit");
    let message = with_causes(&err);
    assert!(
        message.contains("larger than the")
            && message.contains(&format!("announces {}", 3u64 << 30)),
        "{message}"
    );
    assert_eq!(names_in(cache.path()), Vec::<String>::new());
}

#[test]
fn archive_names_in_messages_are_escaped() {
    let evil = "../\u{1b}]0;owned\u{7}\u{1b}[2J";
    let zip = build_zip(&[("ml-100k/ratings.dat", RATINGS), (evil, "x")]);
    let dataset = release("ml-100k", &zip);
    let server = TestServer::start(vec![Reply::Body(zip)]);
    let cache = tempfile::tempdir().expect("tempdir");
    let err = ensure_dataset(&dataset, cache.path(), Some(&server.base_url), false)
        .expect_err("unsafe path");
    let message = with_causes(&err);
    assert!(message.contains("unsafe path"), "{message}");
    assert!(!message.chars().any(|c| c.is_control()), "{message:?}");
    assert!(message.contains("\\u{1b}]0;owned"), "{message}");
}
