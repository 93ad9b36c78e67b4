// Splitting independent rows over XLA's intra-op threads, shared by the kernels in this folder.
#ifndef JAXGEN_NATIVE_THREADS_H_
#define JAXGEN_NATIVE_THREADS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace jaxgen_native {

namespace ffi = xla::ffi;

// openblas_set_num_threads_local: each chunk's products run single-threaded in its own thread.
typedef int (*set_threads_t)(int);
inline set_threads_t g_set_threads_local = nullptr;

// The batch rows of an LSTM (the columns of a linear scan) are independent, so the time loop
// splits into row chunks that run to the end without ever synchronising: one chunk per thread
// of XLA's intra-op pool. OpenBLAS's own threads are not used: they spin after each call and
// slow the XLA work that follows.
// Chunks are claimed from a counter, so the calling thread finishes all of them itself if the
// pool is busy; it then waits only for chunks another thread has started.
struct Chunks {
  int64_t rows, per_chunk, count;
  std::atomic<int64_t> next{0}, done{0};
};

template <typename F>
inline void RunChunk(Chunks& c, const F& body) {
  for (int64_t k; (k = c.next.fetch_add(1)) < c.count;) {
    const int prev = g_set_threads_local ? g_set_threads_local(1) : 0;
    const int64_t b0 = k * c.per_chunk, b1 = std::min(c.rows, b0 + c.per_chunk);
    body(b0, b1);
    if (g_set_threads_local) g_set_threads_local(prev);
    c.done.fetch_add(1, std::memory_order_release);
  }
}

template <typename F>
inline void ForEachRowChunk(ffi::ThreadPool& pool, int64_t rows, F body) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads, rows / 8));
  auto c = std::make_shared<Chunks>();
  c->rows = rows;
  c->per_chunk = (rows + count - 1) / count;
  c->count = (rows + c->per_chunk - 1) / c->per_chunk;
  auto shared_body = std::make_shared<F>(std::move(body));
  for (int64_t k = 1; k < c->count; ++k)
    pool.Schedule([c, shared_body] { RunChunk(*c, *shared_body); });
  RunChunk(*c, *shared_body);
  while (c->done.load(std::memory_order_acquire) < c->count) std::this_thread::yield();
}

}  // namespace jaxgen_native

#endif  // JAXGEN_NATIVE_THREADS_H_
