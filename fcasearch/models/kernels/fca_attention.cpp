// FcaFormer attention for CPU float32 inference: softmax(q k^T * scale + bias) v, one kernel.
//
// Built at run time by fcasearch.models.kernels (torch.utils.cpp_extension, -O3 -march=native,
// OpenMP) and registered as the operator fcasearch_kernels::fca_attention.
//
// Why: at FcaFormer's shapes (head dim 32, a few hundred keys, batch 1) ATen's CPU flash
// attention spends most of its time outside arithmetic (small GEMM calls per block, several
// passes over the logits). Here each thread holds one head's keys transposed in cache and, for a
// block of 8 query rows, computes the 8 x T logits with register-blocked FMAs, adds the bias and
// exponentiates them in place (after each row's maximum), and accumulates the 8 x D output from the
// values, all in L1/L2. Vectors: simd.h.
//
// fca_attention_relative (for the block operator) makes the bias values as it reads them, from the
// block's relative-position bias segments and cross-token biases: a few KB a head, where the
// (1, h, N, T) mask is 1.3 MB a block at L1's stage 2 and is read from memory once a forward.
//
// Inputs: q (B, h, N, D), k and v (B, h, T, D), bias (B or 1, h, N, T), all float32 on CPU with
// unit stride along their last dimension (views of a fused qkv projection qualify). D (the head
// dim) is at most 128; where it is not a multiple of 16, each head's values are copied into rows
// padded to one. Output: (B, N, h, D), contiguous, so merging the heads is a view.

#include "ops.h"
#include "parallel.h"
#include "simd.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using namespace fcasearch_simd;

constexpr int RB = 8;          // query rows per block
constexpr int64_t MAXD = 128;  // largest head dim

void check(const at::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat,
              "fca_attention: ", name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.dim() == dims, "fca_attention: ", name, " must have ", dims, " dimensions");
  TORCH_CHECK(t.stride(dims - 1) == 1, "fca_attention: ", name,
              " must have unit stride along its last dimension");
}

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check(q, "q", 4);
  check(k, "k", 4);
  check(v, "v", 4);
  const int64_t D = q.size(3);
  TORCH_CHECK(D >= 1 && D <= MAXD, "fca_attention: head dim ", D, " is not in 1..", MAXD);
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == D &&
                  v.sizes() == k.sizes(),
              "fca_attention: q ", q.sizes(), ", k ", k.sizes(), " and v ", v.sizes(),
              " do not match");
}

// Where a row block's bias rows come from: a (B or 1, h, N, T) tensor (full), or made from the
// relative-position segments and the cross-token biases (rel, see fca_attention_relative).
struct BiasSource {
  const float* full = nullptr;
  int64_t sb = 0, sh = 0, sn = 0;  // full's strides (sb 0: one for every batch)
  const float* seg = nullptr;      // (h, Rh, Rw, Rw)
  const float* cross = nullptr;    // (h, M) or null (zeros)
  int64_t rh = 0, rw = 0;
};

// The relative-position bias of query n over all N keys, then the M cross-token biases, into dst
// (T = N + M floats, and up to 15 more written past them): per key row kr, the Rw values
// seg[h][|qr - kr|][qc][:].
inline void relative_row(const BiasSource& src, int64_t h, int64_t n, int64_t N, int64_t M,
                         float* dst) {
  const int64_t rh = src.rh, rw = src.rw, qr = n / rw, qc = n % rw;
  const float* segh = src.seg + h * rh * rw * rw;
  for (int64_t kr = 0; kr < rh; ++kr) {
    const float* s = segh + ((qr > kr ? qr - kr : kr - qr) * rw + qc) * rw;
    float* d = dst + kr * rw;
    int64_t c = 0;
    for (; c + 16 <= rw; c += 16) store(d + c, load(s + c));
    if (c < rw) store(d + c, load_n(s + c, rw - c));  // the lanes past rw are overwritten next
  }
  const float* cb = src.cross != nullptr ? src.cross + h * M : nullptr;
  int64_t c = 0;
  for (; c + 16 <= M; c += 16) store(dst + N + c, cb != nullptr ? load(cb + c) : splat(0.f));
  if (c < M) store(dst + N + c, cb != nullptr ? load_n(cb + c, M - c) : splat(0.f));
}

// The T keys of a head (row j at kb + j * ksn, D floats) into kt (D, Tp), columns past T zero:
// 16 keys by 16 dims at a time, loaded by rows and transposed in registers (a strided read of
// each column instead took 14% of the attention's time at L1's stage 2).
void transpose_keys(const float* kb, int64_t ksn, int64_t T, int64_t D, int64_t Tp, float* kt) {
  for (int64_t j0 = 0; j0 < Tp; j0 += 16) {
    const int64_t jn = std::min<int64_t>(16, T - j0);
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      const int64_t dn = std::min<int64_t>(16, D - d0);
      transpose_tile(kb + j0 * ksn + d0, ksn, jn, dn, kt + d0 * Tp + j0, Tp);
    }
  }
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const BiasSource& src, double scale) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), T = k.size(2);
  at::Tensor out = at::empty({B, N, H, D}, q.options());
  if (B * H * N == 0) return out;
  TORCH_CHECK(T > 0, "fca_attention: no keys");

  const int64_t Tp = (T + 15) / 16 * 16;  // keys padded to whole vectors
  const int64_t Dp = (D + 15) / 16 * 16;  // head dim padded to whole vectors
  const int64_t nrb = (N + RB - 1) / RB;
  // Work items: (batch, head, run of row blocks), about four a thread or more, so that a thread
  // done early can take over some of another's (parallel.h); consecutive runs of a head on one
  // thread transpose its keys once, a run taken over transposes them again.
  const int64_t threads = at::get_num_threads();
  const int64_t runs = std::min(nrb, std::max<int64_t>(1, (4 * threads + B * H - 1) / (B * H)));
  const int64_t per_run = (nrb + runs - 1) / runs;
  const float sc = static_cast<float>(scale);
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // strides, in elements
  const int64_t qsb = q.stride(0), qsh = q.stride(1), qsn = q.stride(2);
  const int64_t ksb = k.stride(0), ksh = k.stride(1), ksn = k.stride(2);
  const int64_t vsb = v.stride(0), vsh = v.stride(1), vsn = v.stride(2);
  const float neg_inf = -std::numeric_limits<float>::infinity();

  fcasearch_par::parallel_tasks(B * H * runs, [&](fcasearch_par::Tasks& tasks) {
    const int64_t rel_rows = src.full == nullptr ? RB * (Tp + 16) : 0;
    std::vector<float> scratch(RB * Tp + D * Tp + (D % 16 ? T * Dp : 0) + rel_rows);
    float* S = scratch.data();  // (RB, Tp) logits, then probabilities
    float* kt = S + RB * Tp;    // (D, Tp) keys of the current head, transposed
    float* vpad = kt + D * Tp;  // (T, Dp) values of the current head, rows padded (if D % 16)
    float* rel = vpad + (D % 16 ? T * Dp : 0);  // (RB, Tp + 16) bias rows made from src
    int64_t loaded = -1;
    for (int64_t w; (w = tasks.next()) >= 0;) {
      const int64_t bh = w / runs, run = w % runs, b = bh / H, h = bh % H;
      if (bh != loaded) {
        transpose_keys(kp + b * ksb + h * ksh, ksn, T, D, Tp, kt);
        if (D % 16) {
          const float* vsrc = vp + b * vsb + h * vsh;
          for (int64_t j = 0; j < T; ++j) {
            std::copy(vsrc + j * vsn, vsrc + j * vsn + D, vpad + j * Dp);
            std::fill(vpad + j * Dp + D, vpad + (j + 1) * Dp, 0.f);
          }
        }
        loaded = bh;
      }
      const float* vb = D % 16 ? vpad : vp + b * vsb + h * vsh;
      const int64_t vrow = D % 16 ? Dp : vsn;
      const int64_t rb_end = std::min(nrb, (run + 1) * per_run);
      for (int64_t rb = run * per_run; rb < rb_end; ++rb) {
        const int64_t r0 = rb * RB, rn = std::min<int64_t>(RB, N - r0);
        const float* qb = qp + b * qsb + h * qsh + r0 * qsn;
        const float* bias_rows[RB];  // rows past N reuse the last one (their results are unused)
        float qs[RB][MAXD];  // MAXD is a multiple of 16
        for (int r = 0; r < RB; ++r) {
          const int64_t rr = std::min<int64_t>(r, rn - 1);
          if (src.full != nullptr) {
            bias_rows[r] = src.full + b * src.sb + h * src.sh + (r0 + rr) * src.sn;
          } else if (r < rn) {
            relative_row(src, h, r0 + r, N, T - N, rel + r * (Tp + 16));
            bias_rows[r] = rel + r * (Tp + 16);
          } else {
            bias_rows[r] = bias_rows[rn - 1];
          }
          for (int64_t d = 0; d < D; d += 16) {  // by rows (by column it compiled to gathers)
            const v16 qv = r >= rn ? splat(0.f)
                           : D - d >= 16 ? load(qb + r * qsn + d)
                                         : load_n(qb + r * qsn + d, D - d);
            store(qs[r] + d, qv * sc);
          }
        }
        // 1. logits, 32 keys at a time, then 16 if Tp is an odd number of vectors
        int64_t j = 0;
        for (; j + 32 <= Tp; j += 32) {
          v16 acc[RB][2];
          for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = splat(0.f);
          for (int64_t d = 0; d < D; ++d) {
            const v16 k0 = load(kt + d * Tp + j), k1 = load(kt + d * Tp + j + 16);
            for (int r = 0; r < RB; ++r) {
              acc[r][0] += qs[r][d] * k0;
              acc[r][1] += qs[r][d] * k1;
            }
          }
          for (int r = 0; r < RB; ++r) {
            store(S + r * Tp + j, acc[r][0]);
            store(S + r * Tp + j + 16, acc[r][1]);
          }
        }
        if (j < Tp) {
          v16 acc[RB];
          for (int r = 0; r < RB; ++r) acc[r] = splat(0.f);
          for (int64_t d = 0; d < D; ++d) {
            const v16 k0 = load(kt + d * Tp + j);
            for (int r = 0; r < RB; ++r) acc[r] += qs[r][d] * k0;
          }
          for (int r = 0; r < RB; ++r) store(S + r * Tp + j, acc[r]);
        }
        // 2. plus bias, row maxima, exponentials in place, row sums; the last vector's lanes
        // past T (padding keys) become -inf, whose exponential (vexp's floor, e^-87) vanishes
        // next to the row sum of at least 1, and the values below never read them
        const int64_t T16 = T / 16 * 16, tail = T - T16;
        float inv[RB];
        for (int r = 0; r < rn; ++r) {
          float* sr = S + r * Tp;
          const float* br = bias_rows[r];
          v16 mv = splat(neg_inf);
          for (int64_t c = 0; c < T16; c += 16) {
            const v16 x = load(sr + c) + load(br + c);
            store(sr + c, x);
            mv = vmax(mv, x);
          }
          if (tail) {
            v16 x = load(sr + T16) + load_n(br + T16, tail);
            for (int64_t l = tail; l < 16; ++l) x[l] = neg_inf;
            store(sr + T16, x);
            mv = vmax(mv, x);
          }
          const float m = hmax(mv);
          v16 sum = splat(0.f);
          for (int64_t c = 0; c < Tp; c += 16) {
            const v16 p = vexp(load(sr + c) - m);
            store(sr + c, p);
            sum += p;
          }
          inv[r] = 1.f / hsum(sum);
        }
        // 3. probabilities times values
        float* ob = op + ((b * N + r0) * H + h) * D;  // row r at ob + r * H * D
        if (D == 32) {
          v16 acc[RB][2];
          for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = splat(0.f);
          for (int64_t j = 0; j < T; ++j) {
            const v16 a0 = load(vb + j * vrow), a1 = load(vb + j * vrow + 16);
            for (int r = 0; r < RB; ++r) {
              const float p = S[r * Tp + j];
              acc[r][0] += p * a0;
              acc[r][1] += p * a1;
            }
          }
          for (int r = 0; r < rn; ++r) {
            store(ob + r * H * D, acc[r][0] * inv[r]);
            store(ob + r * H * D + 16, acc[r][1] * inv[r]);
          }
        } else {
          for (int64_t c = 0; c < Dp; c += 16) {
            v16 acc[RB];
            for (int r = 0; r < RB; ++r) acc[r] = splat(0.f);
            for (int64_t j = 0; j < T; ++j) {
              const v16 a = load(vb + j * vrow + c);
              for (int r = 0; r < RB; ++r) acc[r] += S[r * Tp + j] * a;
            }
            const int64_t width = std::min<int64_t>(16, D - c);
            for (int r = 0; r < rn; ++r) {
              const v16 o = acc[r] * inv[r];
              if (width == 16) {
                store(ob + r * H * D + c, o);
              } else {
                for (int64_t l = 0; l < width; ++l) ob[r * H * D + c + l] = o[l];
              }
            }
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

namespace fcasearch_ops {

at::Tensor fca_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& bias, double scale) {
  check_qkv(q, k, v);
  check(bias, "bias", 4);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), T = k.size(2);
  TORCH_CHECK((bias.size(0) == B || bias.size(0) == 1) && bias.size(1) == H &&
                  bias.size(2) == N && bias.size(3) == T,
              "fca_attention: bias ", bias.sizes(), " is not (B or 1, h, N, T) for q ", q.sizes(),
              " and k ", k.sizes());
  BiasSource src;
  src.full = bias.data_ptr<float>();
  src.sb = bias.size(0) == 1 ? 0 : bias.stride(0);
  src.sh = bias.stride(1);
  src.sn = bias.stride(2);
  return attention(q, k, v, src, scale);
}

at::Tensor fca_attention_relative(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& segments,
                                  const std::optional<at::Tensor>& cross_bias, double scale) {
  check_qkv(q, k, v);
  const int64_t H = q.size(1), N = q.size(2), M = k.size(2) - N;
  TORCH_CHECK(segments.scalar_type() == at::kFloat && segments.is_contiguous() &&
                  segments.dim() == 4 && segments.size(0) == H &&
                  segments.size(1) * segments.size(2) == N && segments.size(2) == segments.size(3),
              "fca_attention: relative-position segments ", segments.sizes(),
              " are not (h, Rh, Rw, Rw) for ", H, " heads and ", N, " queries");
  TORCH_CHECK(M >= 0, "fca_attention: fewer keys than queries");
  TORCH_CHECK(!cross_bias.has_value() ||
                  (cross_bias->scalar_type() == at::kFloat && cross_bias->is_contiguous() &&
                   cross_bias->numel() == H * M),
              "fca_attention: cross-token bias must hold (h, M) = (", H, ", ", M, ") floats");
  BiasSource src;
  src.seg = segments.data_ptr<float>();
  src.cross = cross_bias.has_value() && M > 0 ? cross_bias->data_ptr<float>() : nullptr;
  src.rh = segments.size(1);
  src.rw = segments.size(2);
  return attention(q, k, v, src, scale);
}

}  // namespace fcasearch_ops

TORCH_LIBRARY_FRAGMENT(fcasearch_kernels, m) {
  m.def("fca_attention(Tensor q, Tensor k, Tensor v, Tensor bias, float scale) -> Tensor");
  m.def("fca_attention_relative(Tensor q, Tensor k, Tensor v, Tensor segments, "
        "Tensor? cross_bias, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(fcasearch_kernels, CPU, m) {
  m.impl("fca_attention", &fcasearch_ops::fca_attention);
  m.impl("fca_attention_relative", &fcasearch_ops::fca_attention_relative);
}
