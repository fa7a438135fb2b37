//! A model's vectors as Parquet files, for the vector database a user
//! already runs (Qdrant, LanceDB, pgvector, FAISS) once one machine is no
//! longer enough: the items' candidate vectors, and each known user's
//! current query vector. A recommendation is the items whose vectors have
//! the largest inner product with the query (not cosine: the vectors are
//! not normalised), so the database's metric must be the dot product.
//!
//! Files are written through a temporary file beside the target and
//! renamed into place, so a file already there stays whole until the new
//! one is complete.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, StringBuilder, UInt32Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::retrieval::recommender::Recommender;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: cannot write: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot write Parquet: {msg}", path.display())]
    Parquet {
        path: std::path::PathBuf,
        msg: String,
    },
}

/// Rows per written batch (and row group): bounds the memory an export
/// holds, whatever the catalogue's or user base's size.
const ROWS_PER_BATCH: usize = 16 * 1024;

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    pub rows: usize,
    pub dim: usize,
}

fn vector_field(dim: usize) -> Field {
    Field::new(
        "vector",
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
        ),
        false,
    )
}

/// Writes batches from `next_batch` (None: done) to `path` as Parquet.
fn write_parquet(
    path: &Path,
    schema: Arc<Schema>,
    next_batch: &mut dyn FnMut() -> Option<Vec<ArrayRef>>,
) -> Result<usize, ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let pq = |e: parquet::errors::ParquetError| ExportError::Parquet {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let tmp = crate::files::temp_file_beside(path).map_err(io)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROWS_PER_BATCH))
        .build();
    let mut writer = ArrowWriter::try_new(
        tmp.as_file().try_clone().map_err(io)?,
        schema.clone(),
        Some(props),
    )
    .map_err(pq)?;
    let mut rows = 0;
    while let Some(columns) = next_batch() {
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| ExportError::Parquet {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
        rows += batch.num_rows();
        writer.write(&batch).map_err(pq)?;
    }
    writer.close().map_err(pq)?;
    crate::files::persist(tmp, path).map_err(io)?;
    Ok(rows)
}

fn vectors(values: &[f32], dim: usize) -> ArrayRef {
    let mut b = FixedSizeListBuilder::with_capacity(
        Float32Builder::with_capacity(values.len()),
        dim as i32,
        values.len() / dim.max(1),
    )
    .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    for row in values.chunks_exact(dim) {
        b.values().append_slice(row);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Every item the model can recommend: `item_id` (the id as the data
/// named it), `title`, `vector` (its candidate embedding, `dim` floats).
pub fn write_items(rec: &Recommender, path: &Path) -> Result<Written, ExportError> {
    let dim = rec.spec.dim;
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        vector_field(dim),
    ]));
    let ids: Vec<u32> = (1..rec.spec.vocab_size as u32)
        .filter(|&i| rec.is_item(i))
        .collect();
    let table = &rec.params.candidate_embedding;
    let mut chunks = ids.chunks(ROWS_PER_BATCH);
    let rows = write_parquet(path, schema, &mut || {
        let chunk = chunks.next()?;
        let mut keys = StringBuilder::new();
        let mut titles = StringBuilder::new();
        let mut values = Vec::with_capacity(chunk.len() * dim);
        for &id in chunk {
            keys.append_value(rec.catalog.key(id));
            titles.append_value(rec.catalog.title(id));
            let row = id as usize * dim;
            values.extend_from_slice(&table[row..row + dim]);
        }
        Some(vec![
            Arc::new(keys.finish()),
            Arc::new(titles.finish()),
            vectors(&values, dim),
        ])
    })?;
    Ok(Written { rows, dim })
}

/// Every user the model was trained on: `user_id`, `history_len` (items
/// read), `vector` (the query their whole history gives now, as
/// `recommend --user` computes it). `on_rows` is told the rows done.
pub fn write_queries(
    rec: &Recommender,
    path: &Path,
    on_rows: &mut dyn FnMut(usize),
) -> Result<Written, ExportError> {
    let dim = rec.spec.dim;
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("history_len", DataType::UInt32, false),
        vector_field(dim),
    ]));
    let users = &rec.users;
    let mut start = 0;
    let rows = write_parquet(path, schema, &mut || {
        if start >= users.len() {
            return None;
        }
        let end = (start + ROWS_PER_BATCH).min(users.len());
        let histories: Vec<&[u32]> = (start..end).map(|u| users.get(u)).collect();
        let queries = rec.encode(&histories);
        let mut keys = StringBuilder::new();
        let mut lens = UInt32Builder::new();
        for (u, h) in (start..end).zip(&histories) {
            keys.append_value(&users.keys[u]);
            lens.append_value(h.len() as u32);
        }
        on_rows(end - start);
        start = end;
        Some(vec![
            Arc::new(keys.finish()),
            Arc::new(lens.finish()),
            vectors(&queries, dim),
        ])
    })?;
    Ok(Written { rows, dim })
}
