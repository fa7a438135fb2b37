//! Keras 3 `AdamW`, fused into one pass over each tensor: decoupled weight
//! decay (`v -= lr·wd·v`), then the Adam moments and the bias-corrected step.

use serde::{Deserialize, Serialize};

use crate::kernels::dispatch;
use crate::model::Params;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub learning_rate: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// `keras.optimizers.AdamW(learning_rate=0.005)` with Keras' defaults.
    fn default() -> Self {
        AdamWConfig {
            learning_rate: 0.005,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.004,
        }
    }
}

/// The optimiser's state: both moments of every tensor and the step count.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub step: u64,
    pub m: Params,
    pub v: Params,
}

dispatch! {
    fn update_tensor(
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        decay: f32,
        alpha: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    ) {
        for i in 0..param.len().min(grad.len()).min(m.len()).min(v.len()) {
            let g = grad[i];
            let p = param[i] - param[i] * decay;
            let mi = m[i] + (g - m[i]) * (1.0 - beta_1);
            let vi = v[i] + (g * g - v[i]) * (1.0 - beta_2);
            m[i] = mi;
            v[i] = vi;
            param[i] = p - alpha * mi / (vi.sqrt() + epsilon);
        }
    }
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, shape: &crate::model::ModelSpec) -> AdamW {
        AdamW {
            cfg,
            step: 0,
            m: Params::zeros(shape),
            v: Params::zeros(shape),
        }
    }

    /// One step at learning rate `lr` (the configured one, or a schedule's).
    pub fn apply(&mut self, params: &mut Params, grads: &Params, lr: f32) {
        self.step += 1;
        let c = self.cfg;
        let t = self.step as f64;
        let alpha = (lr as f64 * (1.0 - (c.beta_2 as f64).powf(t)).sqrt()
            / (1.0 - (c.beta_1 as f64).powf(t))) as f32;
        let decay = lr * c.weight_decay;
        let grads = grads.tensors();
        let ms = self.m.tensors_mut();
        let vs = self.v.tensors_mut();
        let ps = params.tensors_mut();
        let work: Vec<_> = ps.into_iter().zip(grads).zip(ms).zip(vs).collect();
        use rayon::prelude::*;
        work.into_par_iter().for_each(|(((p, g), m), v)| {
            // Large tensors are split so both cores share them.
            const CHUNK: usize = 1 << 15;
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| {
                    update_tensor(p, g, m, v, decay, alpha, c.beta_1, c.beta_2, c.epsilon)
                });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn adamw_matches_the_keras_update() {
        let cfg = crate::model::ModelOptions {
            embedding_dim: 2,
            context_len: 1,
            ..Default::default()
        }
        .spec(3);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut params = Params::init(&cfg, 1);
        let mut opt = AdamW::new(AdamWConfig::default(), &cfg);
        let c = AdamWConfig::default();
        let mut want: Vec<f64> = params.query_embedding.iter().map(|&x| x as f64).collect();
        let (mut m, mut s) = (vec![0.0f64; want.len()], vec![0.0f64; want.len()]);
        for step in 1..=3 {
            let mut grads = Params::zeros(&cfg);
            for t in grads.tensors_mut() {
                for g in t.iter_mut() {
                    *g = rng.random_range(-1.0..1.0);
                }
            }
            opt.apply(&mut params, &grads, c.learning_rate);
            let (lr, b1, b2, eps, wd) = (
                c.learning_rate as f64,
                c.beta_1 as f64,
                c.beta_2 as f64,
                c.epsilon as f64,
                c.weight_decay as f64,
            );
            let alpha = lr * (1.0 - b2.powi(step)).sqrt() / (1.0 - b1.powi(step));
            for i in 0..want.len() {
                let g = grads.query_embedding[i] as f64;
                want[i] -= lr * wd * want[i];
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                s[i] = b2 * s[i] + (1.0 - b2) * g * g;
                want[i] -= alpha * m[i] / (s[i].sqrt() + eps);
            }
        }
        for (a, w) in params.query_embedding.iter().zip(&want) {
            assert!((*a as f64 - w).abs() < 1e-6, "{a} vs {w}");
        }
    }
}
