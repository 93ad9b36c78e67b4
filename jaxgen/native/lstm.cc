// The LSTM's two time loops (forward, and the backward of the hand-written BPTT) as XLA FFI
// handlers for the CPU backend. jaxgen.native compiles this file on first use and registers the
// handlers as "jaxgen_lstm_fwd" and "jaxgen_lstm_bwd".
//
// Why: inside lax.scan, XLA's CPU backend runs each step as a dozen small thunks plus a
// [B, H] x [H, 4H] product, and both the per-thunk cost and its small products are slower than
// a product from pre-packed weights and one fused pass over the gates
// (benchmarks/results/native_lstm.md, rnn_step.md). Here each step is one product (Product:
// packed panels on AVX-512, else OpenBLAS, the library numpy ships, whose sgemm Python passes in
// through jaxgen_set_sgemm) and one vectorised loop, and the batch rows are split over XLA's
// threads.
//
// Layouts (row-major float32), gate order i, f, g, o as in jaxgen.recurrence:
//   zx [T, B, 4H] (input projection and bias), w [H, 4H], h0, c0 [B, H].
//   forward  -> ys [T, B, H] (h after each step), acts [T, B, 4H] (activated gates),
//               cs [T, B, H] (cell after each step).
//   backward <- dys [T, B, H], dh_T, dc_T [B, H], acts, cs, c0, w^T [4H, H]
//            -> dzs [T, B, 4H] (gate pre-activation gradients), dh0, dc0 [B, H].
// reverse != 0 runs from t = T-1 down to 0 (the backward then runs from 0 up).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include <vector>

#include "threads.h"
#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;
using jaxgen_native::ForEachRowChunk;
using jaxgen_native::g_set_threads_local;
using jaxgen_native::set_threads_t;

namespace {

// cblas_sgemm with 64-bit integers (OpenBLAS built with USE64BITINT, as numpy's is).
typedef void (*sgemm_t)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t,
                        const float*, int64_t, float, float*, int64_t);
sgemm_t g_sgemm = nullptr;
enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };

// tanh as a rational minimax approximation (odd degree-13 numerator, even degree-6
// denominator) on [-7.9, 7.9], where float32 tanh has not yet rounded to +-1: within 3.3e-7 of
// the exact value, and it vectorises (libm's tanhf does not).
inline float fast_tanh(float x) {
  const float kClamp = 7.90531110763549805f;
  x = x < -kClamp ? -kClamp : (x > kClamp ? kClamp : x);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

// seq [T, B, 4H] against the recurrent weight: w [H, 4H] (forward) or its transpose [4H, H]
// (backward: dz @ w^T as a plain product, which OpenBLAS runs about twice as fast at these
// shapes as the transposed one).
// The per-step product. OpenBLAS packs the weight again on every call; here the weight is the
// same for all T steps, so it is packed once per call of the kernel into panels of 32 columns
// (Panels) and each step multiplies from the panels with its rows' accumulators in registers
// (Tile): on AVX-512 about 1.8x OpenBLAS's single-threaded sgemm at 16 rows. Without AVX-512
// the steps call OpenBLAS.
constexpr int64_t kPanel = 32;  // columns per panel: two 16-float vectors

struct Weight {
  const float* w;             // [K, N] row-major
  int64_t K, N;
  std::vector<float> panels;  // [ceil(N / 32), K, 32], zero past N; empty: use OpenBLAS
};

// rows: the products this weight will take part in (T * B); packing costs about as much as a
// product of a few rows, so short runs keep OpenBLAS.
void Pack(Weight& wt, int64_t rows) {
#if defined(__AVX512F__)
  if (rows < 32) return;
  const int64_t count = (wt.N + kPanel - 1) / kPanel;
  wt.panels.assign(count * wt.K * kPanel, 0.0f);
  for (int64_t j = 0; j < count; ++j) {
    const int64_t cols = std::min(kPanel, wt.N - j * kPanel);
    for (int64_t k = 0; k < wt.K; ++k)
      std::memcpy(&wt.panels[(j * wt.K + k) * kPanel], wt.w + k * wt.N + j * kPanel,
                  sizeof(float) * cols);
  }
#endif
}

#if defined(__AVX512F__)
// c[R, cols] (+)= a[R, K] @ panel[K, 32], the 2R accumulators in registers.
template <int R>
void Tile(const float* a, int64_t lda, const float* panel, int64_t K, float* c, int64_t ldc,
          int64_t cols, bool accumulate) {
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(panel + k * kPanel);
    const __m512 b1 = _mm512_loadu_ps(panel + k * kPanel + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + k]);
      acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
    }
  }
  if (cols == kPanel) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (accumulate) {
        acc0[r] = _mm512_add_ps(acc0[r], _mm512_loadu_ps(c + r * ldc));
        acc1[r] = _mm512_add_ps(acc1[r], _mm512_loadu_ps(c + r * ldc + 16));
      }
      _mm512_storeu_ps(c + r * ldc, acc0[r]);
      _mm512_storeu_ps(c + r * ldc + 16, acc1[r]);
    }
    return;
  }
  for (int r = 0; r < R; ++r) {  // the last, partial panel
    float out[kPanel];
    _mm512_storeu_ps(out, acc0[r]);
    _mm512_storeu_ps(out + 16, acc1[r]);
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = (accumulate ? c[r * ldc + j] : 0.0f) + out[j];
  }
}

// One panel (columns 32j..32j+31) for all M rows: the panel stays in cache while the rows pass.
void PanelRows(int64_t M, const float* a, int64_t lda, const Weight& wt, int64_t j, float* c,
               int64_t ldc, bool accumulate) {
  const float* panel = &wt.panels[j * wt.K * kPanel];
  const int64_t cols = std::min(kPanel, wt.N - j * kPanel);
  c += j * kPanel;
  int64_t r = 0;
  for (; r + 8 <= M; r += 8) Tile<8>(a + r * lda, lda, panel, wt.K, c + r * ldc, ldc, cols, accumulate);
  const float* ar = a + r * lda;
  float* cr = c + r * ldc;
  switch (M - r) {
    case 7: Tile<7>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    case 6: Tile<6>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    case 5: Tile<5>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    case 4: Tile<4>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    case 3: Tile<3>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    case 2: Tile<2>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    case 1: Tile<1>(ar, lda, panel, wt.K, cr, ldc, cols, accumulate); break;
    default: break;
  }
}
#endif

// c[M, N] = a[M, K] @ w (+ c when accumulate).
void Product(int64_t M, const float* a, int64_t lda, const Weight& wt, float* c, int64_t ldc,
             bool accumulate) {
#if defined(__AVX512F__)
  if (!wt.panels.empty()) {
    for (int64_t j = 0; j * kPanel < wt.N; ++j) PanelRows(M, a, lda, wt, j, c, ldc, accumulate);
    return;
  }
#endif
  g_sgemm(kRowMajor, kNoTrans, kNoTrans, M, wt.N, wt.K, 1.0f, a, lda, wt.w, wt.N,
          accumulate ? 1.0f : 0.0f, c, ldc);
}

ffi::Error CheckShapes(const ffi::Buffer<ffi::F32>& seq, const ffi::Buffer<ffi::F32>& w,
                       bool transposed, int64_t* T, int64_t* B, int64_t* H) {
  auto d = seq.dimensions();
  auto dw = w.dimensions();
  const int64_t hidden = dw.size() == 2 ? dw[transposed ? 1 : 0] : 0;
  const int64_t gates = dw.size() == 2 ? dw[transposed ? 0 : 1] : 0;
  if (d.size() != 3 || gates != d[2] || 4 * hidden != d[2])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxgen_lstm: expected [T, B, 4H] gates and a [H, 4H] weight "
                      "([4H, H] for the backward)");
  if (g_sgemm == nullptr)
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition,
                      "jaxgen_lstm: no sgemm registered (jaxgen.native.load was not called)");
  *T = d[0];
  *B = d[1];
  *H = hidden;
  return ffi::Error::Success();
}

ffi::Error LstmFwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> zx,
                       ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, int32_t reverse,
                       ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> acts,
                       ffi::ResultBuffer<ffi::F32> cs) {
  int64_t T, B, H;
  if (auto e = CheckShapes(zx, w, false, &T, &B, &H); e.failure()) return e;
  const int64_t G = 4 * H;
  const float* zxp = zx.typed_data();
  const float* wp = w.typed_data();
  const float* h0p = h0.typed_data();
  const float* c0p = c0.typed_data();
  float* yp = ys->typed_data();
  float* ap = acts->typed_data();
  float* cp = cs->typed_data();
  Weight wt{wp, H, G, {}};
  Pack(wt, T * B);
  const Weight* wtp = &wt;
  ForEachRowChunk(pool, B, [=](int64_t b0, int64_t b1) {
    const int64_t M = b1 - b0;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const int64_t tp = reverse ? t + 1 : t - 1;  // the step processed before t
      const float* h = (s == 0 ? h0p : yp + tp * B * H) + b0 * H;
      const float* c = (s == 0 ? c0p : cp + tp * B * H) + b0 * H;
      float* a = ap + (t * B + b0) * G;
      // a = zx[t] + h @ w, then activated in place.
      std::memcpy(a, zxp + (t * B + b0) * G, sizeof(float) * M * G);
      Product(M, h, H, *wtp, a, G, true);
      float* y = yp + (t * B + b0) * H;
      float* cn = cp + (t * B + b0) * H;
      for (int64_t b = 0; b < M; ++b) {
        float* ab = a + b * G;
        // sigmoid(x) = (1 + tanh(x / 2)) / 2 for i, f, o; tanh for g.
#pragma omp simd
        for (int64_t j = 0; j < G; ++j) {
          const float half = (j >= 2 * H && j < 3 * H) ? 1.0f : 0.5f;
          ab[j] = fast_tanh(ab[j] * half) * half + (1.0f - half);
        }
        const float* cb = c + b * H;
        float* yb = y + b * H;
        float* cnb = cn + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float cc = ab[H + j] * cb[j] + ab[j] * ab[2 * H + j];
          cnb[j] = cc;
          yb[j] = ab[3 * H + j] * fast_tanh(cc);
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error LstmBwdImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dys,
                       ffi::Buffer<ffi::F32> dh_T, ffi::Buffer<ffi::F32> dc_T,
                       ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> cs,
                       ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> wt, int32_t reverse,
                       ffi::ResultBuffer<ffi::F32> dzs, ffi::ResultBuffer<ffi::F32> dh0,
                       ffi::ResultBuffer<ffi::F32> dc0) {
  int64_t T, B, H;
  if (auto e = CheckShapes(acts, wt, true, &T, &B, &H); e.failure()) return e;
  const int64_t G = 4 * H;
  const float* dyp = dys.typed_data();
  const float* ap = acts.typed_data();
  const float* cp = cs.typed_data();
  const float* c0p = c0.typed_data();
  Weight wtt{wt.typed_data(), G, H, {}};
  Pack(wtt, T * B);
  const Weight* wtp = &wtt;
  float* dzp = dzs->typed_data();
  float* dhp = dh0->typed_data();  // the running dh and dc, left holding dh0 and dc0
  float* dcp = dc0->typed_data();
  std::memcpy(dhp, dh_T.typed_data(), sizeof(float) * B * H);
  std::memcpy(dcp, dc_T.typed_data(), sizeof(float) * B * H);
  ForEachRowChunk(pool, B, [=](int64_t b0, int64_t b1) {
    const int64_t M = b1 - b0;
    float* dh = dhp + b0 * H;
    float* dc = dcp + b0 * H;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? s : T - 1 - s;  // the forward's processing order, backwards
      const bool first = reverse ? (t == T - 1) : (t == 0);
      const int64_t tp = reverse ? t + 1 : t - 1;
      const float* a = ap + (t * B + b0) * G;
      const float* cn = cp + (t * B + b0) * H;
      const float* cprev = (first ? c0p : cp + tp * B * H) + b0 * H;
      const float* dy = dyp + (t * B + b0) * H;
      float* dz = dzp + (t * B + b0) * G;
      for (int64_t b = 0; b < M; ++b) {
        const float* ab = a + b * G;
        const float* cnb = cn + b * H;
        const float* cpb = cprev + b * H;
        const float* dyb = dy + b * H;
        float* dzb = dz + b * G;
        float* dhb = dh + b * H;
        float* dcb = dc + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float i = ab[j], f = ab[H + j], g = ab[2 * H + j], o = ab[3 * H + j];
          const float th = fast_tanh(cnb[j]);
          const float dhh = dhb[j] + dyb[j];
          const float dcc = dcb[j] + dhh * o * (1.0f - th * th);
          dzb[j] = dcc * g * i * (1.0f - i);
          dzb[H + j] = dcc * cpb[j] * f * (1.0f - f);
          dzb[2 * H + j] = dcc * i * (1.0f - g * g);
          dzb[3 * H + j] = dhh * th * o * (1.0f - o);
          dcb[j] = dcc * f;
        }
      }
      // dh_prev = dz @ w^T: [M, 4H] x [4H, H].
      Product(M, dz, G, *wtp, dh, H, false);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" void jaxgen_set_sgemm(void* sgemm, void* set_threads_local) {
  g_sgemm = reinterpret_cast<sgemm_t>(sgemm);
  g_set_threads_local = reinterpret_cast<set_threads_t>(set_threads_local);
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxgenLstmFwd, LstmFwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // zx
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Attr<int32_t>("reverse")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // ys
                                  .Ret<ffi::Buffer<ffi::F32>>()   // acts
                                  .Ret<ffi::Buffer<ffi::F32>>());  // cs

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxgenLstmBwd, LstmBwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dys
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dh_T
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dc_T
                                  .Arg<ffi::Buffer<ffi::F32>>()  // acts
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w^T
                                  .Attr<int32_t>("reverse")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dzs
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dh0
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dc0
