//! The JSON of the API: requests read field by field from a parsed
//! `serde_json::Value`, so every error can name its field and batch index,
//! and answers written straight into a byte buffer.
//!
//! Nothing here trusts the request: no `unwrap` on what a client sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::cell::RefCell;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::retrieval::recommender::Recommender;
use crate::retrieval::Scored;
use crate::text::{escaped, quoted};

/// The largest `k` a request may ask for.
pub const MAX_K: usize = 1000;
/// `k` when a request does not give one.
pub const DEFAULT_K: usize = 10;
/// The most unknown ids, titles or users an error lists in `unknown`; the
/// rest are counted in `unknown_more`.
pub const UNKNOWN_LISTED: usize = 20;
/// The most characters of one unknown id or title an error echoes; a
/// longer one is cut and ends in `…`.
pub const UNKNOWN_CHARS: usize = 80;

/// An answer that is not a success: `{"error": {"code", "message", ...}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The ids, titles or user that were not found, as the client sent
    /// them, bounded (`set_unknown`), and how many more were not listed.
    pub unknown: Option<(Vec<Value>, usize)>,
    /// The request's index in a batch.
    pub index: Option<usize>,
    /// Seconds to wait before trying again (`Retry-After`), for 503.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            unknown: None,
            index: None,
            retry_after: None,
        }
    }

    /// 503 `overloaded`: the work is refused now rather than queued
    /// without bound; the client may try again in a second.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        e.retry_after = Some(1);
        e
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Lists what was not found: the first `UNKNOWN_LISTED`, each string cut
    /// after `UNKNOWN_CHARS` characters, and the count of the rest. A
    /// request of many long unknown ids cannot make a long answer.
    pub fn set_unknown(&mut self, all: &[Value]) {
        let shown = all
            .iter()
            .take(UNKNOWN_LISTED)
            .map(|v| match v {
                Value::String(s) if s.chars().nth(UNKNOWN_CHARS).is_some() => {
                    let mut cut: String = s.chars().take(UNKNOWN_CHARS).collect();
                    cut.push('…');
                    Value::String(cut)
                }
                other => other.clone(),
            })
            .collect();
        self.unknown = Some((shown, all.len().saturating_sub(UNKNOWN_LISTED)));
    }

    pub fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), Value::from(self.code));
        e.insert("message".into(), Value::from(self.message.as_str()));
        if let Some((shown, more)) = &self.unknown {
            e.insert("unknown".into(), Value::Array(shown.clone()));
            e.insert("unknown_more".into(), Value::from(*more));
        }
        if let Some(i) = self.index {
            e.insert("index".into(), Value::from(i));
        }
        let mut top = Map::new();
        top.insert("error".into(), Value::Object(e));
        Value::Object(top)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status, self.body().to_string().into_bytes());
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The JSON type of a value, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a value for a message (long strings cut).
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Parses a body as JSON, saying where it is malformed. A key given twice
/// in one object, at any depth, is refused (`duplicate_field`, naming it
/// by its path): serde_json's `Value` would keep the last silently. The
/// depth limit is serde_json's own (128), and the body is bounded before.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad(
            "malformed_json",
            "the request body is empty: expected a JSON object",
        ));
    }
    let duplicate = RefCell::new(Duplicate::default());
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ValueSeed(&duplicate)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| {
        let duplicate = duplicate.into_inner();
        if duplicate.found {
            return ApiError::bad(
                "duplicate_field",
                format!(
                    "{}: given twice in one object (at line {}, column {}): send each field once",
                    duplicate.path(),
                    e.line(),
                    e.column()
                ),
            );
        }
        let what = match e.classify() {
            serde_json::error::Category::Eof => "the JSON ends early",
            _ => "malformed JSON",
        };
        // serde_json's text ends with " at line L column C": say it once.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let text = text.strip_suffix(&suffix).unwrap_or(&text);
        ApiError::bad(
            "malformed_json",
            format!("{what} at line {}, column {}: {text}", e.line(), e.column()),
        )
    })
}

/// One step of the path to a value: an object's key or an array's index.
enum Step {
    Key(String),
    Index(usize),
}

/// A key found twice, and its path, filled innermost first as the parse
/// unwinds.
#[derive(Default)]
struct Duplicate {
    found: bool,
    steps: Vec<Step>,
}

impl Duplicate {
    /// The path as a field is named in messages (`requests[1].k`), each key
    /// escaped and bounded; a path deeper than 8 shows its two ends.
    fn path(&self) -> String {
        let mut steps: Vec<String> = self
            .steps
            .iter()
            .rev()
            .map(|s| match s {
                Step::Key(k) => format!(".{}", escaped(k)),
                Step::Index(i) => format!("[{i}]"),
            })
            .collect();
        if steps.len() > 8 {
            let last = steps.split_off(steps.len() - 4);
            steps.truncate(4);
            steps.push(".…".into());
            steps.extend(last);
        }
        let path = steps.concat();
        path.strip_prefix('.').map(str::to_string).unwrap_or(path)
    }
}

/// Reads any JSON value as serde_json's `Value` does, but sees every key
/// of an object and refuses one given twice.
#[derive(Clone, Copy)]
struct ValueSeed<'a>(&'a RefCell<Duplicate>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    let mut d = self.0.borrow_mut();
                    if d.found {
                        d.steps.push(Step::Index(out.len()));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let mut d = self.0.borrow_mut();
                d.found = true;
                d.steps.push(Step::Key(key));
                return Err(A::Error::custom("a key given twice"));
            }
            match map.next_value_seed(self) {
                Ok(v) => {
                    out.insert(key, v);
                }
                Err(e) => {
                    let mut d = self.0.borrow_mut();
                    if d.found {
                        d.steps.push(Step::Key(key));
                    }
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

fn invalid_type(field: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::bad(
        "invalid_type",
        format!(
            "{field}: expected {expected}, found {} {}",
            kind(found),
            show(found)
        ),
    )
}

/// What a request recommends from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Item ids, oldest first, as sent (numbers or strings).
    History(Vec<Value>),
    Titles(Vec<String>),
    User(String),
}

/// One recommendation request, checked for shape and limits but not yet
/// against a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub source: Source,
    pub k: usize,
    pub exclude_seen: bool,
    pub parity: bool,
    pub skip_unknown: bool,
}

/// The fields a recommendation request may have.
pub const QUERY_FIELDS: &[&str] = &[
    "history",
    "titles",
    "user",
    "k",
    "exclude_seen",
    "skip_unknown",
    "parity",
];

fn boolean(field: &str, v: Value) -> Result<bool, ApiError> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(invalid_type(field, "true or false", &other)),
    }
}

/// Reads one request object; `at` prefixes field names (`requests[3].`).
pub fn parse_query(v: Value, at: &str, max_history: usize) -> Result<Query, ApiError> {
    let map = match v {
        Value::Object(m) => m,
        other => {
            let field = if at.is_empty() {
                "the request body".to_string()
            } else {
                at.trim_end_matches('.').to_string()
            };
            return Err(invalid_type(&field, "a JSON object", &other));
        }
    };
    let mut history = None;
    let mut titles = None;
    let mut user = None;
    let mut k = DEFAULT_K;
    let mut exclude_seen = false;
    let mut parity = false;
    let mut skip_unknown = false;
    for (key, value) in map {
        let field = format!("{at}{key}");
        match key.as_str() {
            "history" => match value {
                Value::Array(ids) => {
                    for (i, id) in ids.iter().enumerate() {
                        let ok = match id {
                            Value::Number(n) => n.is_u64(),
                            Value::String(_) => true,
                            _ => false,
                        };
                        if !ok {
                            return Err(invalid_type(
                                &format!("{field}[{i}]"),
                                "an item id (a non-negative integer or a string)",
                                id,
                            ));
                        }
                    }
                    history = Some(ids);
                }
                other => return Err(invalid_type(&field, "an array of item ids", &other)),
            },
            "titles" => match value {
                Value::Array(ts) => {
                    let mut out = Vec::with_capacity(ts.len());
                    for (i, t) in ts.into_iter().enumerate() {
                        match t {
                            Value::String(s) => out.push(s),
                            other => {
                                return Err(invalid_type(
                                    &format!("{field}[{i}]"),
                                    "a title (a string)",
                                    &other,
                                ))
                            }
                        }
                    }
                    titles = Some(out);
                }
                other => return Err(invalid_type(&field, "an array of titles", &other)),
            },
            "user" => match value {
                Value::String(s) => user = Some(s),
                Value::Number(n) if n.is_u64() => user = Some(n.to_string()),
                other => {
                    return Err(invalid_type(
                        &field,
                        "a user id (a non-negative integer or a string)",
                        &other,
                    ))
                }
            },
            "k" => match value.as_u64() {
                Some(n) if (1..=MAX_K as u64).contains(&n) => k = n as usize,
                Some(n) => {
                    return Err(ApiError::bad(
                        "k_out_of_range",
                        format!("{field}: expected 1 to {MAX_K}, found {n}"),
                    ))
                }
                None => match &value {
                    Value::Number(n) if n.is_i64() => {
                        return Err(ApiError::bad(
                            "k_out_of_range",
                            format!("{field}: expected 1 to {MAX_K}, found {n}"),
                        ))
                    }
                    other => {
                        return Err(invalid_type(
                            &field,
                            &format!("an integer from 1 to {MAX_K}"),
                            other,
                        ))
                    }
                },
            },
            "exclude_seen" => exclude_seen = boolean(&field, value)?,
            "parity" => parity = boolean(&field, value)?,
            "skip_unknown" => skip_unknown = boolean(&field, value)?,
            _ => {
                return Err(ApiError::bad(
                    "unknown_field",
                    format!(
                        "{at}{}: unknown field; a request has {}",
                        escaped(&key),
                        QUERY_FIELDS.join(", ")
                    ),
                ))
            }
        }
    }
    let given = history.is_some() as usize + titles.is_some() as usize + user.is_some() as usize;
    if given != 1 {
        let what = if given == 0 {
            "missing_field"
        } else {
            "conflicting_fields"
        };
        let place = if at.is_empty() {
            String::new()
        } else {
            format!("{}: ", at.trim_end_matches('.'))
        };
        return Err(ApiError::bad(
            what,
            format!("{place}give exactly one of \"history\" (item ids), \"titles\" or \"user\""),
        ));
    }
    let source = if let Some(h) = history {
        Source::History(h)
    } else if let Some(t) = titles {
        Source::Titles(t)
    } else {
        Source::User(user.unwrap_or_default())
    };
    let (field, len) = match &source {
        Source::History(h) => ("history", h.len()),
        Source::Titles(t) => ("titles", t.len()),
        Source::User(_) => ("user", 1),
    };
    if len == 0 {
        return Err(ApiError::bad(
            "empty_history",
            format!("{at}{field}: expected at least one item"),
        ));
    }
    if len > max_history {
        return Err(ApiError::bad(
            "history_too_long",
            format!("{at}{field}: {len} items, more than the limit of {max_history}"),
        ));
    }
    Ok(Query {
        source,
        k,
        exclude_seen,
        parity,
        skip_unknown,
    })
}

/// A request's history as model ids, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub history: Vec<u32>,
    /// Ids or titles not found, left out because of `skip_unknown`.
    pub skipped: Option<Vec<Value>>,
}

/// The model id of an item id as sent.
fn lookup(rec: &Recommender, id: &Value) -> Option<u32> {
    match id {
        Value::Number(n) => {
            let n = n.as_u64()?;
            if rec.catalog.keys.is_none() {
                let n = u32::try_from(n).ok()?;
                rec.is_item(n).then_some(n)
            } else {
                rec.item_id(&n.to_string()).ok()
            }
        }
        Value::String(s) => rec.item_id(s).ok(),
        _ => None,
    }
}

fn list_for_message(unknown: &[Value]) -> String {
    let shown: Vec<String> = unknown.iter().take(UNKNOWN_LISTED).map(show).collect();
    let more = unknown.len().saturating_sub(UNKNOWN_LISTED);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Turns a query's ids, titles or user into model ids.
pub fn resolve(q: &Query, rec: &Recommender, at: &str) -> Result<Resolved, ApiError> {
    let (field, what, code, found, unknown): (&str, &str, &'static str, Vec<u32>, Vec<Value>) =
        match &q.source {
            Source::User(u) => {
                return match rec.user_history(u) {
                    Ok(h) if !h.is_empty() => Ok(Resolved {
                        history: h.to_vec(),
                        skipped: q.skip_unknown.then(Vec::new),
                    }),
                    Ok(_) => Err(ApiError::bad(
                        "empty_history",
                        format!(
                            "{at}user: user {} has no items in the model's data",
                            quoted(u)
                        ),
                    )),
                    Err(_) => {
                        let mut e = ApiError::bad(
                            "unknown_user",
                            format!(
                                "{at}user: unknown user {}: not in the model's training data",
                                quoted(u)
                            ),
                        );
                        e.set_unknown(&[Value::from(u.as_str())]);
                        Err(e)
                    }
                };
            }
            Source::History(ids) => {
                let mut found = Vec::with_capacity(ids.len());
                let mut unknown = Vec::new();
                for id in ids {
                    match lookup(rec, id) {
                        Some(i) => found.push(i),
                        None => unknown.push(id.clone()),
                    }
                }
                ("history", "item id", "unknown_items", found, unknown)
            }
            Source::Titles(ts) => {
                let mut found = Vec::with_capacity(ts.len());
                let mut unknown = Vec::new();
                for t in ts {
                    match rec.title_id(t) {
                        Ok(i) => found.push(i),
                        Err(_) => unknown.push(Value::from(t.as_str())),
                    }
                }
                ("titles", "title", "unknown_titles", found, unknown)
            }
        };
    if !unknown.is_empty() && !q.skip_unknown {
        let mut e = ApiError::bad(
            code,
            format!(
                "{at}{field}: {} unknown {what}(s), not in the model's catalogue: {} (send \"skip_unknown\": true to leave them out)",
                unknown.len(),
                list_for_message(&unknown)
            ),
        );
        e.set_unknown(&unknown);
        return Err(e);
    }
    if found.is_empty() {
        let mut e = ApiError::bad(
            "empty_history",
            format!(
                "{at}{field}: every {what} is unknown ({}), nothing left to recommend from",
                list_for_message(&unknown)
            ),
        );
        e.set_unknown(&unknown);
        return Err(e);
    }
    Ok(Resolved {
        history: found,
        skipped: q.skip_unknown.then_some(unknown),
    })
}

/// Refuses a query naming a user of the training data when the server was
/// not started with user look-ups on: the stored histories are the
/// training data's, and answers with and without `exclude_seen` give them
/// away.
pub fn check_lookup(q: &Query, at: &str, allowed: bool) -> Result<(), ApiError> {
    if allowed || !matches!(q.source, Source::User(_)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "user_lookup_off",
        format!(
            "{at}user: this server does not look up users of the training data (it was started without --allow-user-lookup); send the user's \"history\" instead"
        ),
    ))
}

/// Reads a batch body: `{"requests": [query, ...]}`.
pub fn parse_batch(v: Value, max_batch: usize, max_history: usize) -> Result<Vec<Query>, ApiError> {
    let map = match v {
        Value::Object(m) => m,
        other => return Err(invalid_type("the request body", "a JSON object", &other)),
    };
    let mut requests = None;
    for (key, value) in map {
        match key.as_str() {
            "requests" => match value {
                Value::Array(a) => requests = Some(a),
                other => return Err(invalid_type("requests", "an array of requests", &other)),
            },
            _ => {
                return Err(ApiError::bad(
                    "unknown_field",
                    format!(
                        "{}: unknown field; a batch has only \"requests\"",
                        escaped(&key)
                    ),
                ))
            }
        }
    }
    let requests = requests.ok_or_else(|| {
        ApiError::bad(
            "missing_field",
            "requests: missing; a batch is {\"requests\": [{\"history\": [...]}, ...]}",
        )
    })?;
    if requests.is_empty() {
        return Err(ApiError::bad(
            "empty_batch",
            "requests: expected at least one request",
        ));
    }
    if requests.len() > max_batch {
        return Err(ApiError::bad(
            "batch_too_large",
            format!(
                "requests: {} requests, more than the limit of {max_batch}",
                requests.len()
            ),
        ));
    }
    requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            parse_query(r, &format!("requests[{i}]."), max_history).map_err(|mut e| {
                e.index = Some(i);
                e
            })
        })
        .collect()
}

#[derive(Serialize)]
struct ItemOut<'a> {
    id: String,
    title: &'a str,
    score: f32,
}

/// Writes `"items": [...]` (and `"skipped"`) of one answer, without braces.
pub fn write_answer(
    out: &mut Vec<u8>,
    rec: &Recommender,
    found: &[Scored],
    skipped: Option<&[Value]>,
) {
    let items: Vec<ItemOut> = found
        .iter()
        .map(|s| ItemOut {
            id: rec.catalog.key(s.id),
            title: rec.catalog.title(s.id),
            score: s.score,
        })
        .collect();
    out.extend_from_slice(b"\"items\":");
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &items);
    if let Some(s) = skipped {
        out.extend_from_slice(b",\"skipped\":");
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(v: Value) -> Result<Query, ApiError> {
        parse_query(v, "", 5)
    }

    #[test]
    fn reads_every_field_with_defaults() {
        let got = q(json!({"history": [1, "2"]})).unwrap();
        assert_eq!(got.source, Source::History(vec![json!(1), json!("2")]));
        assert_eq!(
            (got.k, got.exclude_seen, got.parity, got.skip_unknown),
            (10, false, false, false)
        );
        let got =
            q(json!({"user": 7, "k": 3, "exclude_seen": true, "skip_unknown": true})).unwrap();
        assert_eq!(got.source, Source::User("7".into()));
        assert_eq!((got.k, got.exclude_seen, got.skip_unknown), (3, true, true));
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let e = q(json!({"history": [1, true]})).unwrap_err();
        assert_eq!(e.code, "invalid_type");
        assert!(e.message.starts_with("history[1]:"), "{}", e.message);
        let e = q(json!({"history": [1], "k": 0})).unwrap_err();
        assert_eq!(e.code, "k_out_of_range");
        let e = q(json!({"history": [1], "k": -4})).unwrap_err();
        assert_eq!(e.code, "k_out_of_range");
        let e = q(json!({"history": [1], "k": 1001})).unwrap_err();
        assert_eq!(e.code, "k_out_of_range");
        let e = q(json!({"history": [1], "k": "3"})).unwrap_err();
        assert_eq!(e.code, "invalid_type");
        let e = q(json!({"history": []})).unwrap_err();
        assert_eq!(e.code, "empty_history");
        let e = q(json!({"history": [1, 2, 3, 4, 5, 6]})).unwrap_err();
        assert_eq!(e.code, "history_too_long");
        let e = q(json!({"k": 3})).unwrap_err();
        assert_eq!(e.code, "missing_field");
        let e = q(json!({"history": [1], "user": "a"})).unwrap_err();
        assert_eq!(e.code, "conflicting_fields");
        let e = q(json!({"history": [1], "hist": 2})).unwrap_err();
        assert_eq!(e.code, "unknown_field");
        let e = q(json!([1, 2])).unwrap_err();
        assert_eq!(e.code, "invalid_type");
    }

    #[test]
    fn batch_errors_carry_the_index() {
        let v = json!({"requests": [{"history": [1]}, {"history": [1], "k": 0}]});
        let e = parse_batch(v, 10, 5).unwrap_err();
        assert_eq!(e.index, Some(1));
        assert!(e.message.starts_with("requests[1].k:"), "{}", e.message);
        let e = parse_batch(json!({"requests": [{"user": "1"}, {"user": "2"}]}), 1, 5).unwrap_err();
        assert_eq!(e.code, "batch_too_large");
        let e = parse_batch(json!({"requests": [{}]}), 1, 5).unwrap_err();
        assert_eq!(e.code, "missing_field");
        assert!(e.message.starts_with("requests[0]: "), "{}", e.message);
    }

    #[test]
    fn an_error_lists_a_bounded_number_of_unknown_ids_each_cut_short() {
        let long = "x".repeat(5000);
        let all: Vec<Value> = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    Value::from(format!("{i}{long}"))
                } else {
                    Value::from(i)
                }
            })
            .collect();
        let mut e = ApiError::bad("unknown_items", "");
        e.set_unknown(&all);
        let body = e.body();
        let shown = body["error"]["unknown"].as_array().unwrap();
        assert_eq!(shown.len(), UNKNOWN_LISTED);
        assert_eq!(body["error"]["unknown_more"], 30);
        assert_eq!(shown[1], json!(1));
        let first = shown[0].as_str().unwrap();
        assert_eq!(first.chars().count(), UNKNOWN_CHARS + 1);
        assert!(first.starts_with("0xxx") && first.ends_with('…'), "{first}");
        assert!(body.to_string().len() < 2000, "{body}");
        // A short list is whole, and says none was left out.
        e.set_unknown(&[json!("a"), json!(7)]);
        let body = e.body();
        assert_eq!(body["error"]["unknown"], json!(["a", 7]));
        assert_eq!(body["error"]["unknown_more"], 0);
    }

    #[test]
    fn a_key_given_twice_is_refused_by_its_path() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"history":[1],"history":[2]}"#, "history: given twice"),
            (br#"{"k":3,"history":[1],"k":3}"#, "k: given twice"),
            (
                br#"{"requests":[{"history":[1]},{"k":1,"history":[2],"k":2}]}"#,
                "requests[1].k: given twice",
            ),
            (
                br#"{"requests":[],"requests":[{"history":[1]}]}"#,
                "requests: given twice",
            ),
            (br#"[{}, [{"a":{"b":1,"b":1}}]]"#, "[1][0].a.b: given twice"),
            (
                b"{\"x\":{\"\\u001b[31m\":1,\"\\u001b[31m\":2}}",
                "x.\\u{1b}[31m: given twice",
            ),
        ];
        for (body, want) in cases {
            let e = parse_json(body).unwrap_err();
            assert_eq!(e.code, "duplicate_field", "{}", e.message);
            assert!(e.message.starts_with(want), "{}", e.message);
            assert!(e.message.contains("line 1, column"), "{}", e.message);
        }
        // A deep path shows its two ends, and a long key is cut.
        let mut deep = String::new();
        for _ in 0..40 {
            deep.push_str("{\"a\":");
        }
        let long = "k".repeat(10_000);
        deep.push_str(&format!("{{\"{long}\":1,\"{long}\":1}}"));
        deep.push_str(&"}".repeat(40));
        let e = parse_json(deep.as_bytes()).unwrap_err();
        assert_eq!(e.code, "duplicate_field");
        assert!(
            e.message.starts_with("a.a.a.a.….a.a.a.kkk"),
            "{}",
            e.message
        );
        assert!(e.message.len() < 300, "{}", e.message);
        // The same key in different objects is no duplicate.
        let v = parse_json(br#"{"requests":[{"history":[1]},{"history":[2]}]}"#).unwrap();
        assert_eq!(v, json!({"requests":[{"history":[1]},{"history":[2]}]}));
    }

    #[test]
    fn json_without_duplicates_parses_as_serde_json_does() {
        let bodies: &[&[u8]] = &[
            br#"{"history":[1,"2",-3,4.5,1.7976931348623157e308,18446744073709551615,18446744073709551616],"k":null}"#,
            br#"{"t":"\u00e9\ud83d\ude00","b":[true,false,{}],"n":-0.0,"f":0.1}"#,
            b"  [1, 2]  ",
            b"\"just a string\"",
        ];
        for body in bodies {
            let want: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(parse_json(body).unwrap(), want);
        }
        // Deeper than serde_json's limit of 128 is refused, not recursed into.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = parse_json(deep.as_bytes()).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("recursion limit"), "{}", e.message);
        let e = parse_json(b"{\"a\":1} x").unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("trailing characters"), "{}", e.message);
    }

    #[test]
    fn malformed_json_says_where() {
        let e = parse_json(b"{\"history\": [1,\n 2,}").unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = parse_json(b"  ").unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
    }
}
