// The linear recurrence h_t = a_t * h_{t-1} + b_t (elementwise) as an XLA FFI handler for the
// CPU backend, registered by jaxgen.native as "jaxgen_linear_scan". It is the time loop of the
// parallel-in-time cells (minGRU, minLSTM: jaxgen.linear_rnn) run sequentially: on two cores
// the associative scan does more work than this loop and cannot win (parallel_cells.md), and
// inside lax.scan each of the T steps is a few small thunks (about 15 us a step at B 32, H 256)
// for work that takes well under a microsecond. Here the loop over T is one pass that streams
// a, b and h once, vectorised over the columns, with the columns split over XLA's threads.
// The backward pass is the same recurrence run the other way (jaxgen.native.linear_sequence).
//
// Layouts (row-major float32): a, b [T, N]; h0 [N] -> hs [T, N] (h after each step).
// reverse != 0 runs from t = T-1 down to 0.
#include <algorithm>
#include <cstdint>

#include "threads.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

ffi::Error LinearScanImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                          ffi::Buffer<ffi::F32> h0, int32_t reverse,
                          ffi::ResultBuffer<ffi::F32> hs) {
  const auto dims = b.dimensions();
  if (dims.size() != 2 || a.dimensions().size() != 2 || a.dimensions()[0] != dims[0] ||
      a.dimensions()[1] != dims[1] || h0.element_count() != dims[1])
    return ffi::Error::InvalidArgument("jaxgen_linear_scan: expected a, b [T, N] and h0 [N]");
  const int64_t T = dims[0], N = dims[1];
  const float* A = a.typed_data();
  const float* B = b.typed_data();
  const float* H0 = h0.typed_data();
  float* out = hs->typed_data();
  constexpr int64_t kBlock = 16;  // columns per unit of work: one AVX-512 vector
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  // At least 8 blocks (128 columns) per thread, as ForEachRowChunk splits.
  jaxgen_native::ForEachRowChunk(pool, blocks, [&](int64_t k0, int64_t k1) {
    const int64_t c0 = k0 * kBlock, c1 = std::min(N, k1 * kBlock);
    const float* prev = H0;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = reverse ? T - 1 - s : s;
      const float* at = A + t * N;
      const float* bt = B + t * N;
      float* ht = out + t * N;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) ht[c] = at[c] * prev[c] + bt[c];
      prev = ht;
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxgenLinearScan, LinearScanImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Attr<int32_t>("reverse")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // hs
