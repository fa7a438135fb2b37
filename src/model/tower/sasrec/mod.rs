//! SASRec's query tower (Kang & McAuley 2018, in the pre-LayerNorm form of
//! the PyTorch SASRec / gSASRec implementations): causal multi-head
//! self-attention blocks over a batch of item sequences, forward and
//! backward, llm.c-style: plain `f32` slices, matrix products through
//! `kernels::matmul`, row-parallel loops through rayon, every buffer kept in
//! a `SasRecCache` that is reused across calls.
//!
//! Written by hand because the rest of the engine is: the model's maths is
//! a set of forward/backward functions over flat buffers (see `gru`), and no
//! crate gives forward and backward passes over `f32` slices with this
//! padding mask (either side of a row), deterministic dropout and
//! results independent of the thread count.
//!
//! Shapes: `B` rows (`batch`), `L` steps, `D` = `dim`, `H` heads of
//! `D / H`; `N = B·L` tokens. Token (row `b`, step `t`) is row `b·L + t` of
//! every `N x ·` buffer. `input` is `N x D` (item embeddings gathered by the
//! caller), `mask` is `N` (1 real item, 0 padding), the output `N x D`.
//!
//! The maths, with `m` the mask and `drop` inverted dropout:
//!   x = drop((input·√D + pos[t]) ⊙ m)
//!   per block:  a = LN1(x);  [q k v] = a·W_qkv + b_qkv
//!               per head, query step t attends to the real key steps
//!               u ≤ t: softmax(q_t·k_u / √(D/H)) · v_u (a padding query,
//!               or one with no visible key, gives zeros);
//!               x = x + drop(attn·W_out + b_out)
//!               f = LN2(x);  g = act(f·W1 + b1)·W2 + b2  (hidden size D)
//!               x = (x + drop(g)) ⊙ m
//!   output = LN_final(x) ⊙ m
//! LayerNorm: `(x − mean)/√(var + 1e-8)·gain + bias` (the biased variance,
//! eps 1e-8 as in the PyTorch SASRec). GELU is the tanh approximation.
//!
//! Weight layout (one flat vector, see `layout`): `pos_embedding` `L x D`,
//! then per block `ln1.gain` `D`, `ln1.bias` `D`, `attn.w_qkv` `D x 3D`
//! (columns: q, k, v; head `h` is columns `h·D/H..(h+1)·D/H` of each),
//! `attn.b_qkv` `3D`, `attn.w_out` `D x D`, `attn.b_out` `D`, `ln2.gain`
//! `D`, `ln2.bias` `D`, `ffn.w1` `D x D`, `ffn.b1` `D`, `ffn.w2` `D x D`,
//! `ffn.b2` `D`, then `final_ln.gain` `D`, `final_ln.bias` `D`. Matrices are
//! row-major `in x out` (`y = x·W`).
//!
//! Determinism: projections are matmuls over all `N` tokens (their weight
//! gradients too, one product each); attention runs per row in parallel,
//! each row with single-threaded matmuls; bias, gain and position gradients
//! are column sums in token order. The result is the same whatever the
//! thread count, and the dropout masks come from `crate::model::dropout::dropout_mask`
//! (counter-based), seeded per place and block from the call's `seed`.

mod layers;
mod layout;
mod passes;
#[cfg(test)]
pub(crate) mod tests;

pub use layout::*;
pub use passes::*;
