//! Showing user input inside a message. Whatever a file, flag or request
//! holds may be huge or may hold terminal escape codes; a message quotes it
//! through `quoted`, which bounds its length and escapes every control
//! character, so no input can flood or drive the terminal it is shown on.

/// How many characters of an input value a message shows.
pub const SHOWN_CHARS: usize = 80;

/// `value` in double quotes, control characters (and `"`, `\`) escaped as
/// Rust would write them, cut after `SHOWN_CHARS` characters with the
/// total length said: `"abc…" (10485760 characters)`.
pub fn quoted(value: &str) -> String {
    bounded(value.chars(), "\"", || {
        format!("{} characters", value.chars().count())
    })
}

/// `value` escaped and bounded as by `quoted`, without the quotes: for a
/// name shown in a list (a CSV header's columns).
pub fn escaped(value: &str) -> String {
    bounded(value.chars(), "", || {
        format!("{} characters", value.chars().count())
    })
}

/// `value` whole, its control characters escaped: for text of the user's
/// own data printed as output (titles in a table), where cutting would lose
/// what was asked for but an escape code must still not reach the terminal.
pub fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().any(char::is_control) {
        let mut out = String::with_capacity(value.len() + 8);
        for c in value.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out.into()
    } else {
        value.into()
    }
}

/// How many characters of a library's message about an input (a parser's
/// error, which may quote what it read) are shown.
pub const MESSAGE_CHARS: usize = 4 * SHOWN_CHARS;

/// A message made from input (a parser's error naming a value it read):
/// escaped as `escaped`, and when longer than `MESSAGE_CHARS` characters,
/// its start and its end with `…` between: a library's message often says
/// what is wrong last (the column, the field, the cause), after a long
/// preamble.
pub fn message(value: &str) -> String {
    let total = value.chars().count();
    if total <= MESSAGE_CHARS {
        return escaped_all(value.chars());
    }
    let tail = MESSAGE_CHARS / 3;
    let head = MESSAGE_CHARS - tail;
    let tail_start = value
        .char_indices()
        .nth(total - tail)
        .map_or(value.len(), |(at, _)| at);
    format!(
        "{}…{} ({total} characters)",
        escaped_all(value.chars().take(head)),
        escaped_all(value[tail_start..].chars())
    )
}

fn escaped_all(chars: impl Iterator<Item = char>) -> String {
    chars.flat_map(char::escape_debug).collect()
}

/// The first `SHOWN_CHARS` of `chars`, escaped, between `quote`s; when
/// there are more, `…` and the whole length (`total`) follow.
fn bounded(
    chars: impl Iterator<Item = char>,
    quote: &str,
    total: impl FnOnce() -> String,
) -> String {
    bounded_to(chars, quote, SHOWN_CHARS, total)
}

fn bounded_to(
    mut chars: impl Iterator<Item = char>,
    quote: &str,
    limit: usize,
    total: impl FnOnce() -> String,
) -> String {
    let mut out = String::from(quote);
    for c in chars.by_ref().take(limit) {
        out.extend(c.escape_debug());
    }
    if chars.next().is_some() {
        out.push_str(&format!("…{quote} ({})", total()));
    } else {
        out.push_str(quote);
    }
    out
}

/// `bytes` read as Latin-1 (every byte a character), then `quoted`: for a
/// field of a file that is not known to be UTF-8.
pub fn quoted_bytes(bytes: &[u8]) -> String {
    let chars = bytes.iter().map(|&b| b as char);
    bounded(chars, "\"", || format!("{} bytes", bytes.len()))
}

/// "error: ..." and a "caused by" line per cause, leaving out a cause
/// whose words the lines above already say (many messages name their
/// cause, which is also kept as their `source`). The command line prints
/// it; Python raises it. Every control character of a message is escaped
/// (`printable`): a message may hold a path or value as given, and a
/// newline in a file name must not fake an `error:` line, nor an escape
/// code drive the terminal; the report's own line breaks are the only ones.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = format!("error: {}", printable(&e.to_string()));
    for cause in e.chain().skip(1) {
        let cause = printable(&cause.to_string()).into_owned();
        if !out.contains(&cause) {
            out.push_str(&format!("\n  caused by: {cause}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_report_escapes_what_its_messages_hold() {
        let path = "m\nerror: all is well\u{1b}[2J.safetensors";
        let e = anyhow::anyhow!(std::io::Error::other("denied"))
            .context(format!("{path}: cannot read the model file"));
        let report = error_report(&e);
        assert_eq!(
            report,
            "error: m\\nerror: all is well\\u{1b}[2J.safetensors: cannot read the model \
             file\n  caused by: denied"
        );
        assert_eq!(report.lines().count(), 2);
        assert!(!report.replace('\n', "").chars().any(char::is_control));
    }

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("é"), "\"é\"");
    }

    #[test]
    fn control_characters_are_escaped() {
        let q = quoted("a\u{1b}[31mred\u{7}\n\"x\\");
        assert!(!q.chars().any(|c| c.is_control()), "{q}");
        assert_eq!(q, "\"a\\u{1b}[31mred\\u{7}\\n\\\"x\\\\\"");
        assert!(!escaped("\u{1b}]0;title\u{7}")
            .chars()
            .any(|c| c.is_control()));
        assert!(!quoted_bytes(b"\x1b[2J\x9b").chars().any(|c| c.is_control()));
    }

    #[test]
    fn printable_text_is_whole_with_control_characters_escaped() {
        assert_eq!(printable("Amélie (2001)"), "Amélie (2001)");
        let p = printable("Evil\u{1b}[2J (1999)\u{9b}");
        assert_eq!(p, "Evil\\u{1b}[2J (1999)\\u{9b}");
        let long = "t".repeat(1000);
        assert_eq!(printable(&long).len(), 1000);
    }

    #[test]
    fn a_message_from_input_is_escaped_and_bounded_more_loosely() {
        assert_eq!(
            message("unknown variant `\u{1b}[2J`"),
            "unknown variant `\\u{1b}[2J`"
        );
        let long = "m".repeat(10_000);
        let m = message(&long);
        assert!(
            m.starts_with(&"m".repeat(MESSAGE_CHARS * 2 / 3)) && m.ends_with("(10000 characters)")
        );
        assert!(m.chars().count() < MESSAGE_CHARS + 30, "{m}");
        // What a long message says last is kept: here, which column.
        let arrow = format!("Parser error: {} in column \"item_id\"", "z".repeat(2_000));
        let m = message(&arrow);
        assert!(m.starts_with("Parser error: zzz"), "{m}");
        assert!(
            m.contains("…") && m.contains("in column \\\"item_id\\\" (2034 characters)"),
            "{m}"
        );
        assert_eq!(
            message(&"a".repeat(MESSAGE_CHARS)),
            "a".repeat(MESSAGE_CHARS)
        );
    }

    #[test]
    fn long_values_are_cut_and_their_length_said() {
        let long = "x".repeat(10_000_000);
        let q = quoted(&long);
        assert!(q.len() < 2 * SHOWN_CHARS, "{} bytes", q.len());
        assert!(q.starts_with(&format!("\"{}…\"", "x".repeat(SHOWN_CHARS))));
        assert!(q.ends_with("(10000000 characters)"));
        let exact = "y".repeat(SHOWN_CHARS);
        assert_eq!(quoted(&exact), format!("\"{exact}\""));
        let e = escaped(&long);
        assert!(e.len() < 2 * SHOWN_CHARS && !e.contains('"'), "{e}");
        let b = quoted_bytes(&vec![b'z'; 1_000_000]);
        assert!(
            b.len() < 2 * SHOWN_CHARS && b.ends_with("(1000000 bytes)"),
            "{b}"
        );
        assert_eq!(quoted_bytes(b"\xe9t\xe9"), "\"\u{e9}t\u{e9}\"");
    }

    #[test]
    fn a_cause_the_message_already_names_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("r.dat: {source}")]
        struct Named {
            source: std::io::Error,
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let named = anyhow::Error::new(Named { source: io });
        assert_eq!(error_report(&named), "error: r.dat: no such file");
        let wrapped = anyhow::anyhow!("disk full").context("--log: cannot write");
        assert_eq!(
            error_report(&wrapped),
            "error: --log: cannot write\n  caused by: disk full"
        );
    }
}
