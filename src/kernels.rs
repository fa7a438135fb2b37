//! The bottom layer, shared by `model`, `train` and `retrieval`: low-level
//! numeric building blocks over plain `f32` slices, namely the matrix product
//! (through `gemm`) over read-only matrix views, a vectorisable `exp`, and
//! runtime CPU-feature dispatch for the element-wise loops. It imports
//! nothing from the rest of the crate.

use gemm::Parallelism;

/// A read-only view of a row-major `f32` buffer as a `rows x cols` matrix,
/// the shape the product sees. `t()` views the transpose without copying,
/// so a buffer holding `r` rows of `c` enters a product either as `r x c`
/// (`Mat::new(buf, r, c)`) or as `c x r` (`Mat::new(buf, r, c).t()`).
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    /// Elements from one stored row to the next (the stored row length
    /// for a dense buffer; more for a block of a wider matrix).
    stride: usize,
    /// Stored transposed: this `rows x cols` view is `cols` rows of `rows`
    /// in `data`.
    transposed: bool,
}

impl<'a> Mat<'a> {
    /// `data` as a `rows x cols` matrix stored as written: `rows` rows of
    /// `cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat::block(data, rows, cols, cols)
    }

    /// The top-left `rows x cols` block of a row-major matrix whose rows
    /// are `stride` elements apart (`stride >= cols`).
    pub fn block(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        assert!(
            stride >= cols,
            "matrix block: stride {stride} < {cols} columns"
        );
        Mat {
            data,
            rows,
            cols,
            stride,
            transposed: false,
        }
    }

    /// The transpose (`cols x rows`) of the same buffer, without copying.
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            stride: self.stride,
            transposed: !self.transposed,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(row stride, column stride)` of the view's elements in `data`.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.stride as isize)
        } else {
            (self.stride as isize, 1)
        }
    }

    /// The elements `data` must hold: up to the last stored row's end.
    fn extent(&self) -> usize {
        let (stored_rows, stored_cols) = if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        };
        if stored_rows == 0 || stored_cols == 0 {
            0
        } else {
            (stored_rows - 1) * self.stride + stored_cols
        }
    }
}

/// What `matmul` does with the product in `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `c = a · b`.
    Overwrite,
    /// `c += a · b`.
    Accumulate,
}

/// `c (m x n) = [c +] a (m x k) · b (k x n)`, `c` row-major, where
/// `m x k` and `k x n` are the shapes of the views `a` and `b`. `threads` > 1
/// lets `gemm` split the product over rayon.
pub fn matmul(c: &mut [f32], a: Mat, b: Mat, output: Output, threads: usize) {
    let n = b.cols;
    matmul_block(c, n, a, b, output, threads);
}

/// `matmul` into the top-left `m x n` block of a row-major `c` whose rows
/// are `c_stride` elements apart (`c_stride >= n`).
pub fn matmul_block(
    c: &mut [f32],
    c_stride: usize,
    a: Mat,
    b: Mat,
    output: Output,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k,
        "matmul: lhs is {m}x{k} but rhs is {}x{n}",
        b.rows
    );
    assert!(
        c_stride >= n,
        "matmul: output stride {c_stride} < {n} columns"
    );
    let c_extent = if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * c_stride + n
    };
    assert!(
        c.len() >= c_extent,
        "matmul: output holds {} < {m}x{n} at stride {c_stride}",
        c.len()
    );
    assert!(
        a.data.len() >= a.extent(),
        "matmul: lhs holds {} < {m}x{k}",
        a.data.len()
    );
    assert!(
        b.data.len() >= b.extent(),
        "matmul: rhs holds {} < {k}x{n}",
        b.data.len()
    );
    let accumulate = output == Output::Accumulate;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                c[row * c_stride..row * c_stride + n].fill(0.0);
            }
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above guarantee every index gemm touches, derived
    // from (m, n, k) and the strides, lies inside the three slices; `c` is
    // borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `$body` compiled for AVX2+FMA when the CPU has them, else for the
/// baseline target. The body must be plain loops that LLVM can vectorise.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if $crate::kernels::has_avx2_fma() {
                    // SAFETY: the CPU was just checked to support AVX2 and FMA.
                    return unsafe { fast($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use dispatch;

#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `e^x` for f32, relative error about 2e-7 over the whole range, written
/// without branches so loops over it vectorise (Cephes' polynomial with a
/// Cody-Waite range reduction).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n without a float-to-int conversion (Rust's saturating `as` does not
    // vectorise): adding 2^23 puts the integer n + 127 in the mantissa's low
    // bits, and the shift moves it into the exponent field.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits();
    y * f32::from_bits(biased << 23)
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // tanh(x) = 1 - 2 / (e^{2x} + 1): exact at both ends, no overflow.
    1.0 - 2.0 / (fast_exp(2.0 * x) + 1.0)
}

dispatch! {
    fn exp_in_place(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = fast_exp(*x);
        }
    }
}

/// `out[j] += sum over rows of m (rows x cols)`.
pub fn add_column_sums(out: &mut [f32], m: &[f32], cols: usize) {
    for row in m.chunks_exact(cols) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Element-wise `dst += src`.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// How many rows ahead a loop over scattered rows prefetches: enough to
/// cover a cache miss, few enough that the lines are still there (4, 8 and
/// 16 measured alike in the lazy update).
pub const PREFETCH_AHEAD: usize = 8;

/// In a loop at position `i` over `ids`, prefetches the row of `table`
/// (rows of `cols`) that the loop reads `PREFETCH_AHEAD` positions later.
#[inline(always)]
pub fn prefetch_row_ahead(table: &[f32], cols: usize, ids: &[u32], i: usize) {
    if let Some(&ahead) = ids.get(i + PREFETCH_AHEAD) {
        let ahead = ahead as usize;
        if let Some(row) = table.get(ahead * cols..(ahead + 1) * cols) {
            prefetch(row);
        }
    }
}

/// Asks the CPU to start loading the cache lines of `row` (up to 256
/// bytes) before they are read: for loops that visit scattered rows of a
/// table too large for the cache, where the hardware cannot guess the next
/// address. A hint only: it never faults and changes no value.
#[inline(always)]
pub fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = row.as_ptr() as *const i8;
        for line in (0..std::mem::size_of_val(row).min(256)).step_by(64) {
            // SAFETY: PREFETCH is in SSE, which every x86_64 CPU has, and it
            // is only a hint: it never faults or writes, whatever the
            // address (`wrapping_add` stays within `row` here anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of wider matrices, either side transposed, into a block of a
    /// wider output: against a naive triple loop, leaving the rest alone.
    #[test]
    fn matmul_block_reads_and_writes_only_its_blocks() {
        let value = |i: usize| ((i * 37 % 23) as f32 - 11.0) / 7.0;
        let (m, k, n) = (5, 4, 3);
        for (a_t, b_t, output) in [
            (false, false, Output::Overwrite),
            (true, false, Output::Accumulate),
            (false, true, Output::Overwrite),
            (true, true, Output::Accumulate),
        ] {
            // Stored blocks sit in buffers 3 columns wider than they are.
            let (a_rows, a_cols) = if a_t { (k, m) } else { (m, k) };
            let (b_rows, b_cols) = if b_t { (n, k) } else { (k, n) };
            let (a_stride, b_stride, c_stride) = (a_cols + 3, b_cols + 3, n + 3);
            let a_buf: Vec<f32> = (0..a_rows * a_stride).map(value).collect();
            let b_buf: Vec<f32> = (0..b_rows * b_stride).map(|i| value(i + 5)).collect();
            let a_at = |i: usize, j: usize| {
                if a_t {
                    a_buf[j * a_stride + i]
                } else {
                    a_buf[i * a_stride + j]
                }
            };
            let b_at = |i: usize, j: usize| {
                if b_t {
                    b_buf[j * b_stride + i]
                } else {
                    b_buf[i * b_stride + j]
                }
            };
            let mut a = Mat::block(&a_buf, a_rows, a_cols, a_stride);
            let mut b = Mat::block(&b_buf, b_rows, b_cols, b_stride);
            if a_t {
                a = a.t();
            }
            if b_t {
                b = b.t();
            }
            let before: Vec<f32> = (0..m * c_stride).map(|i| value(i + 9)).collect();
            let mut c = before.clone();
            matmul_block(&mut c, c_stride, a, b, output, 1);
            for i in 0..m {
                for j in 0..c_stride {
                    let at = i * c_stride + j;
                    if j >= n {
                        assert_eq!(c[at], before[at], "outside the block at ({i}, {j})");
                        continue;
                    }
                    let mut want: f32 = (0..k).map(|t| a_at(i, t) * b_at(t, j)).sum();
                    if output == Output::Accumulate {
                        want += before[at];
                    }
                    assert!(
                        (c[at] - want).abs() < 1e-5,
                        "({i}, {j}): {} vs {want}",
                        c[at]
                    );
                }
            }
        }
    }

    #[test]
    fn fast_exp_sigmoid_and_tanh_are_accurate() {
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -87.0 + 175.0 * i as f32 / 200_000.0)
            .collect();
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            assert!(
                ((y as f64 - want) / want).abs() < 3e-7,
                "exp({x}) = {y}, want {want}"
            );
            assert_eq!(y, fast_exp(x), "the dispatched and plain kernels agree");
        }
        // Clamped, never infinite or NaN, at the ends.
        assert!(fast_exp(-1e9) >= 0.0 && fast_exp(-1e9) < 1e-37);
        assert!(fast_exp(1e9).is_finite());
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            assert!(
                (sigmoid(x) as f64 - 1.0 / (1.0 + (-(x as f64)).exp())).abs() < 1e-6,
                "sigmoid({x})"
            );
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 1e-6,
                "tanh({x})"
            );
        }
    }
}
