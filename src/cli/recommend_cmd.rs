//! `seqrec recommend MODEL ...`: the top K for a history (ids, titles or a
//! known user), for a whole file of histories, or the reference's demo.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::data::DataOptions;
use crate::retrieval::approx::{IndexChoice, SearchList};
use crate::retrieval::recommender::Recommender;
use crate::retrieval::Scored;
use crate::text::printable;

#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// A model file written by `seqrec train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Item ids the user picked, oldest first, comma-separated (e.g. 595,2687,745).
    #[arg(long, value_name = "IDS")]
    pub history: Option<String>,
    /// Item titles the user picked, oldest first (exact title, case-insensitive; repeat the flag or give several).
    #[arg(long, num_args = 1.., value_name = "TITLE")]
    pub titles: Vec<String>,
    /// A user of the training data: their whole known history.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// How many items to recommend.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Leave out the items of the history itself.
    #[arg(long)]
    pub exclude_seen: bool,
    /// Return exactly what the reference's BruteForceRetrieval would (padding and non-items included).
    #[arg(long)]
    pub parity: bool,
    /// Many users at once: a CSV with a `history` column (ids separated by spaces, `,`, `|` or `;`; quote the field if it holds commas) and optionally `id` and `user` columns.
    #[arg(long, value_name = "FILE", requires = "output")]
    pub input: Option<PathBuf>,
    /// Where `--input`'s answers go: `.jsonl`/`.json` for JSON lines, else CSV.
    #[arg(long, value_name = "FILE", requires = "input")]
    pub output: Option<PathBuf>,
    /// The reference's demo: the first test user's watched titles, then the recommended titles.
    #[arg(long)]
    pub demo: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// Top-K: exact (score every item), approx (the HNSW graph, cached beside the model file as MODEL.index) or auto (approx above 100,000 items).
    #[arg(long, value_enum, default_value_t = IndexChoice::Auto)]
    pub index: IndexChoice,
    /// Approximate index: candidates its walk keeps (ef) [default: 40]. Longer finds more of the exact top-K and answers slower; the graph and its cache stay the same.
    #[arg(long, value_name = "N")]
    pub search_list: Option<SearchList>,
}

#[derive(Serialize)]
struct Item<'a> {
    id: String,
    title: &'a str,
    score: f32,
}

fn items<'a>(rec: &'a Recommender, found: &[Scored]) -> Vec<Item<'a>> {
    found
        .iter()
        .map(|s| Item {
            id: rec.catalog.key(s.id),
            title: rec.catalog.title(s.id),
            score: s.score,
        })
        .collect()
}

/// The history described by the flags, oldest first.
fn history_from_flags(rec: &Recommender, args: &RecommendArgs) -> Result<Vec<u32>> {
    let given = [
        args.history.is_some(),
        !args.titles.is_empty(),
        args.user.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        bail!("give exactly one of --history IDS, --titles TITLE..., --user ID, or use --input FILE / --demo");
    }
    if let Some(h) = &args.history {
        let mut ids = Vec::new();
        for part in h.split(',').filter(|p| !p.trim().is_empty()) {
            ids.push(
                rec.item_id(part)
                    .map_err(|e| anyhow::anyhow!("--history: {e}"))?,
            );
        }
        if ids.is_empty() {
            bail!("--history: expected at least one item id");
        }
        return Ok(ids);
    }
    if !args.titles.is_empty() {
        return args
            .titles
            .iter()
            .map(|t| {
                rec.title_id(t)
                    .map_err(|e| anyhow::anyhow!("--titles: {e}"))
            })
            .collect();
    }
    let user = args.user.as_deref().unwrap_or_default();
    Ok(rec
        .user_history(user)
        .map_err(|e| anyhow::anyhow!("--user: {e}"))?
        .to_vec())
}

/// A model with the reference's padding gives nearly one answer to every
/// history shorter than its context (see `ModelSpec::short_history_washed_out`);
/// the user is told, not left to wonder at the same titles. Warnings go to
/// stderr whatever `--quiet` says.
fn warn_if_washed_out(rec: &Recommender, histories: &[&[u32]]) {
    let short = histories
        .iter()
        .filter(|h| rec.spec.short_history_washed_out(h.len()))
        .count();
    if short == 0 {
        return;
    }
    let which = if histories.len() == 1 {
        "this history is".to_string()
    } else {
        format!("{short} of {} histories are", histories.len())
    };
    eprintln!(
        "warning: {which} shorter than the model's context ({} items), and the model pads on the right \
         without a mask (the reference's settings): its answers to short histories hardly depend on them. \
         A model trained with --preset best (left padding, masked) answers them well.",
        rec.spec.context_len
    );
}

/// The reference's demo, from the model file alone: the first user's
/// history without its last item is the first test example.
pub fn demo(rec: &Recommender) -> Result<(Vec<String>, Vec<String>)> {
    if rec.users.is_empty() {
        bail!("the model file holds no users to take the demo's history from");
    }
    let all = rec.users.get(0);
    let history = &all[..all.len().saturating_sub(1)];
    // What the model reads: the window the spec cuts (padding included).
    let mut context = vec![0u32; rec.spec.context_len];
    rec.spec.cut_window(history, &mut context);
    let found = rec.recommend(&[history], 10, false, true);
    let watched = context
        .iter()
        .map(|&i| rec.catalog.title(i).to_string())
        .collect();
    let recommended = found[0]
        .iter()
        .map(|s| rec.catalog.title(s.id).to_string())
        .collect();
    Ok((watched, recommended))
}

pub fn print_demo(watched: &[String], recommended: &[String]) {
    println!("\n==> Movies the user has watched:");
    println!("{}", printable(&watched.join(", ")));
    println!("\n==> Recommended movies for the above sequence:");
    for t in recommended {
        println!("{}", printable(t));
    }
}

pub fn recommend(args: RecommendArgs, quiet: bool) -> Result<()> {
    if args.k == 0 || args.k > 10_000 {
        bail!("--k: expected 1 to 10000, found {}", args.k);
    }
    let given = [
        args.history.is_some(),
        !args.titles.is_empty(),
        args.user.is_some(),
        args.input.is_some(),
        args.demo,
    ];
    if given.iter().filter(|&&g| g).count() > 1 {
        bail!("give one of --history IDS, --titles TITLE..., --user ID, --input FILE or --demo");
    }
    if args.demo && (args.k != 10 || args.exclude_seen || args.parity) {
        bail!("--demo repeats the reference's demo (10 items, retrieval as the reference's); it takes no --k, --exclude-seen or --parity");
    }
    // `--output` is checked before any work: against the input, the model
    // and its cache now, the data the model was trained on once read.
    let output = match (&args.input, &args.output) {
        (Some(_), Some(out)) => Some(out.as_path()),
        _ => None,
    };
    let mut inputs = super::model_files(&args.model);
    inputs.extend(args.input.clone());
    if let Some(output) = output {
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        crate::files::check_output("--output", output, &inputs)?;
    }
    let saved = crate::checkpoint::load_for_inference(&args.model)?.artifact;
    if let Some(output) = output {
        let data = DataOptions::recorded_input_files(&saved.dataset);
        let data: Vec<&Path> = data.iter().map(PathBuf::as_path).collect();
        crate::files::check_output("--output", output, &data)?;
    }
    let mut rec = Recommender::new(saved);
    if !args.parity && !args.demo {
        super::use_index(
            &mut rec,
            args.index,
            args.search_list,
            &args.model,
            quiet,
            true,
        )?;
    }
    if args.demo {
        let (watched, recommended) = demo(&rec)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "watched": watched, "recommended": recommended })
            );
        } else {
            print_demo(&watched, &recommended);
        }
        return Ok(());
    }
    if let Some(input) = &args.input {
        let output = args.output.as_deref().unwrap_or(Path::new("-"));
        return batch_file(&rec, &args, input, output);
    }
    let history = history_from_flags(&rec, &args)?;
    warn_if_washed_out(&rec, &[&history]);
    let found = rec.recommend(&[&history], args.k, args.exclude_seen, args.parity);
    let list = items(&rec, &found[0]);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "history": history.iter().map(|&i| rec.catalog.key(i)).collect::<Vec<_>>(), "items": list })
        );
        return Ok(());
    }
    let shown: Vec<String> = history
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|&i| {
            let (title, key) = (rec.catalog.title(i), rec.catalog.key(i));
            format!("{} ({})", printable(title), printable(&key))
        })
        .collect();
    println!(
        "history: {} item(s), most recent: {}",
        history.len(),
        shown.join(", ")
    );
    println!("{:>4}  {:>8}  {:>8}  title", "rank", "item", "score");
    for (r, it) in list.iter().enumerate() {
        println!(
            "{:>4}  {:>8}  {:>8.4}  {}",
            r + 1,
            printable(&it.id),
            it.score,
            printable(it.title)
        );
    }
    Ok(())
}

/// The largest `--input` file: millions of histories, whose answers are
/// held in memory until written.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// `--input FILE --output FILE`: one answer per input row, written atomically.
fn batch_file(rec: &Recommender, args: &RecommendArgs, input: &Path, output: &Path) -> Result<()> {
    // A regular file of at most `MAX_INPUT_BYTES` (a FIFO or /dev/zero is
    // refused, not waited on or read without end), streamed.
    let (file, len) = crate::files::open_regular(input)
        .map_err(|e| anyhow::anyhow!("--input {}: {e}", input.display()))?;
    if len > MAX_INPUT_BYTES {
        bail!(
            "--input {}: {len} bytes, larger than the {} a file of histories may be; split it",
            input.display(),
            crate::files::size_text(MAX_INPUT_BYTES)
        );
    }
    use std::io::Read;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(file.take(MAX_INPUT_BYTES));
    let headers = rdr
        .headers()
        .with_context(|| format!("{}:1: unreadable header", input.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (id_col, hist_col, user_col) = (col("id"), col("history"), col("user"));
    if hist_col.is_none() && user_col.is_none() {
        bail!("{}:1: expected a `history` column (ids separated by spaces, | or ;) or a `user` column", input.display());
    }
    let mut ids = Vec::new();
    let mut histories: Vec<Vec<u32>> = Vec::new();
    for (i, rec_line) in rdr.records().enumerate() {
        let line = i + 2;
        let row =
            rec_line.with_context(|| format!("{}:{line}: unreadable CSV", input.display()))?;
        ids.push(
            id_col
                .and_then(|c| row.get(c))
                .map(str::to_string)
                .unwrap_or_else(|| (line - 1).to_string()),
        );
        let user = user_col
            .and_then(|c| row.get(c))
            .filter(|u| !u.trim().is_empty());
        let hist = match (
            hist_col
                .and_then(|c| row.get(c))
                .filter(|h| !h.trim().is_empty()),
            user,
        ) {
            // The server refuses such a request (`conflicting_fields`):
            // picking one here would answer a different question than it.
            (Some(_), Some(_)) => bail!(
                "{}:{line}: give exactly one of \"history\" (item ids) or \"user\"; this line has both",
                input.display()
            ),
            (Some(h), None) => h
                .split([' ', ',', '|', ';'])
                .filter(|p| !p.is_empty())
                .map(|p| rec.item_id(p))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|e| anyhow::anyhow!("{}:{line}: history: {e}", input.display()))?,
            (None, Some(u)) => rec
                .user_history(u)
                .map_err(|e| anyhow::anyhow!("{}:{line}: user: {e}", input.display()))?
                .to_vec(),
            (None, None) => bail!("{}:{line}: empty history and no user", input.display()),
        };
        histories.push(hist);
    }
    let refs: Vec<&[u32]> = histories.iter().map(|h| h.as_slice()).collect();
    warn_if_washed_out(rec, &refs);
    let found = rec.recommend(&refs, args.k, args.exclude_seen, args.parity);
    let json = matches!(
        output.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "json")
    );
    let mut out = Vec::new();
    if json {
        for (id, f) in ids.iter().zip(&found) {
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({ "id": id, "items": items(rec, f) }),
            )?;
            out.push(b'\n');
        }
    } else {
        let mut w = csv::Writer::from_writer(&mut out);
        w.write_record(["id", "rank", "item", "score", "title"])?;
        for (id, f) in ids.iter().zip(&found) {
            for (r, it) in items(rec, f).iter().enumerate() {
                w.write_record([
                    id.as_str(),
                    &(r + 1).to_string(),
                    &it.id,
                    &it.score.to_string(),
                    it.title,
                ])?;
            }
        }
        w.flush()?;
        drop(w);
    }
    crate::files::write_atomically(output, &out)
        .with_context(|| format!("{}: cannot write", output.display()))?;
    eprintln!("wrote {} answer(s) to {}", found.len(), output.display());
    Ok(())
}
