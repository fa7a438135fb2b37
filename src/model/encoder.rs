//! Inference: the one path from histories to query vectors (`recommend`,
//! `evaluate`, `serve` and the metrics between epochs all use it). Each
//! history's window is cut as training cuts it and run through the tower's
//! `infer`, so a served query is the training forward's, bit for bit.

use rayon::prelude::*;

use super::batch::Batch;
use super::params::Params;
use super::spec::{ModelSpec, Padding};
use super::step::Model;
use super::tower::{AnyTower, InputRows, Queries};

/// One encoding job's buffers, reused across its chunks.
#[derive(Default)]
struct JobBuffers {
    inputs: InputRows,
    queries: Queries,
    tower: AnyTower,
}

/// What the tower computes once from the fixed parameters (the GRU: every
/// item's input projection), for the encoder's lifetime.
pub struct QueryEncoder {
    tables: Vec<f32>,
}

impl QueryEncoder {
    pub fn new(spec: &ModelSpec, params: &Params) -> QueryEncoder {
        QueryEncoder {
            tables: spec.tower.inference_tables(spec, params),
        }
    }

    /// Query vectors, `histories.len() x D`, each from the last
    /// `context_len` items of its history (oldest first), in parallel
    /// chunks of rows.
    pub fn encode(&self, spec: &ModelSpec, params: &Params, histories: &[&[u32]]) -> Vec<f32> {
        if spec.tower.cost_follows_longest_window() && histories.len() > 1 {
            // Chunks of like length run over few padding columns: encode in
            // order of length, then put the queries back.
            let d = spec.dim;
            let mut order: Vec<usize> = (0..histories.len()).collect();
            order.sort_by_key(|&i| histories[i].len().min(spec.context_len));
            let sorted: Vec<&[u32]> = order.iter().map(|&i| histories[i]).collect();
            let queries = self.encode_in_order(spec, params, &sorted);
            let mut out = vec![0.0f32; histories.len() * d];
            for (k, &i) in order.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&queries[k * d..(k + 1) * d]);
            }
            return out;
        }
        self.encode_in_order(spec, params, histories)
    }

    fn encode_in_order(&self, spec: &ModelSpec, params: &Params, histories: &[&[u32]]) -> Vec<f32> {
        let d = spec.dim;
        let mut out = vec![0.0f32; histories.len() * d];
        let chunk_rows = spec.tower.inference_rows();
        // One job per thread, each with its own buffers, reused across its
        // chunks: a fresh workspace per chunk (or per rayon split) would
        // page in and zero its large buffers every time. Jobs take every
        // `jobs`-th chunk, so long and short histories spread evenly.
        let chunks = histories.len().div_ceil(chunk_rows);
        let jobs = rayon::current_num_threads().clamp(1, chunks.max(1));
        let parts: Vec<Vec<(usize, Vec<f32>)>> = (0..jobs)
            .into_par_iter()
            .map(|job| {
                let mut buffers = JobBuffers::default();
                (job..chunks)
                    .step_by(jobs)
                    .map(|c| {
                        let hs =
                            &histories[c * chunk_rows..((c + 1) * chunk_rows).min(histories.len())];
                        (c, self.encode_chunk(spec, params, hs, &mut buffers))
                    })
                    .collect()
            })
            .collect();
        for (c, queries) in parts.into_iter().flatten() {
            out[c * chunk_rows * d..][..queries.len()].copy_from_slice(&queries);
        }
        out
    }

    /// The queries of one chunk of histories (`hs.len() x D`), on this
    /// thread.
    fn encode_chunk(
        &self,
        spec: &ModelSpec,
        params: &Params,
        hs: &[&[u32]],
        buffers: &mut JobBuffers,
    ) -> Vec<f32> {
        let l = spec.context_len;
        let mut contexts = vec![0u32; hs.len() * l];
        let mut lengths = Vec::with_capacity(hs.len());
        for (h, window) in hs.iter().zip(contexts.chunks_exact_mut(l)) {
            lengths.push(spec.cut_window(h, window) as u32);
        }
        let batch = Batch {
            size: hs.len(),
            contexts,
            labels: vec![0; hs.len()],
            lengths,
            targets: Vec::new(),
        };
        let model = Model {
            spec,
            params,
            threads: 1,
        };
        buffers.tower.for_spec(&spec.tower).infer(
            &model,
            &self.tables,
            &batch,
            &mut buffers.inputs,
            &mut buffers.queries,
        );
        std::mem::take(&mut buffers.queries.vectors)
    }

    /// A window batch's queries (`B x D`, one per row at its newest step),
    /// from the items of each row's window, encoded in order of length.
    pub(super) fn queries_by_length(model: &Model, batch: &Batch) -> Vec<f32> {
        let (spec, params) = (model.spec, model.params);
        let l = spec.context_len;
        let histories: Vec<&[u32]> = batch
            .contexts
            .chunks_exact(l)
            .zip(&batch.lengths)
            .map(|(window, &n)| match spec.padding {
                Padding::Left => &window[l - n as usize..],
                Padding::Right => &window[..n as usize],
            })
            .collect();
        QueryEncoder::new(spec, params).encode(spec, params, &histories)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::batch::{fill_batch, history_before};
    use crate::model::spec::{ModelOptions, QueryTower};
    use crate::model::workspace::Workspace;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The served query (`QueryEncoder`, one history at a time or many)
    /// equals the training forward's (`fill_batch` + `Model::forward`) bit
    /// for bit, for every padding/mask combination and for histories
    /// shorter than, equal to and longer than the context.
    #[test]
    fn served_queries_equal_the_training_forward_bit_for_bit() {
        let vocab = 40;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let variants = [QueryTower::Gru, QueryTower::Sasrec]
            .into_iter()
            .flat_map(|t| [Padding::Right, Padding::Left].map(|p| (t, p)))
            .flat_map(|(t, p)| [false, true].map(|m| (t, p, m)));
        for (tower, padding, mask_padding) in variants {
            {
                let spec = ModelOptions {
                    embedding_dim: 8,
                    context_len: 6,
                    padding,
                    mask_padding,
                    tower,
                    heads: 2,
                    ..ModelOptions::default()
                }
                .spec(vocab);
                let params = Params::init(&spec, 3);
                // Lengths 1..=13: shorter than, equal to and longer than 6;
                // 300 rows so the encoder uses more than one chunk.
                let mut seqs = crate::data::Sequences::default();
                seqs.offsets.push(0);
                let mut positions = Vec::new();
                for row in 0..300 {
                    let len = 1 + row % 13;
                    for _ in 0..len {
                        seqs.items.push(rng.random_range(1..vocab as u32));
                    }
                    positions.push(seqs.items.len() as u32);
                    seqs.items.push(rng.random_range(1..vocab as u32));
                    seqs.offsets.push(seqs.items.len() as u32);
                    seqs.users.push(row as u32);
                }
                let histories: Vec<&[u32]> = positions
                    .iter()
                    .map(|&p| history_before(&seqs, p))
                    .collect();
                let encoder = QueryEncoder::new(&spec, &params);
                let served = encoder.encode(&spec, &params, &histories);
                let one_by_one: Vec<f32> = histories
                    .iter()
                    .flat_map(|h| encoder.encode(&spec, &params, &[h]))
                    .collect();
                for threads in [1, 2, 3] {
                    let mut batch = Batch::default();
                    fill_batch(&spec, &seqs, &positions, &mut batch);
                    let model = Model {
                        spec: &spec,
                        params: &params,
                        threads,
                    };
                    let mut trained = Vec::new();
                    model.encode(&mut Workspace::default(), &batch, &mut trained);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let what =
                        format!("{tower:?}, {padding:?}, mask {mask_padding}, {threads} thread(s)");
                    assert_eq!(bits(&served), bits(&trained), "{what}");
                    assert_eq!(bits(&one_by_one), bits(&trained), "{what}, one by one");
                }
                // val_loss (`loss_sum`) is the in-batch softmax of these
                // same queries, however it runs the tower.
                let mut batch = Batch::default();
                fill_batch(&spec, &seqs, &positions, &mut batch);
                let model = Model {
                    spec: &spec,
                    params: &params,
                    threads: 2,
                };
                let got = model.loss_sum(&mut Workspace::default(), &batch);
                let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
                let d = spec.dim;
                let label_rows: Vec<f32> = batch
                    .labels
                    .iter()
                    .flat_map(|&id| params.candidate_embedding[id as usize * d..][..d].to_vec())
                    .collect();
                let n = batch.size;
                let want = crate::model::gradcheck::ref_loss(
                    &f64s(&served),
                    &f64s(&label_rows),
                    n,
                    n,
                    d,
                    None,
                    None,
                    None,
                    None,
                    None,
                );
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs(),
                    "{tower:?}, {padding:?}, mask {mask_padding}: loss_sum {got}, f64 {want}"
                );
            }
        }
    }
}
