// The VMP selective scan (SPEC sections 1-3) as XLA FFI kernels for CPUs: forward and backward.
//
// XLA's CPU compiler runs a token-by-token scan as one small fusion per token and cannot keep
// the state in registers across tokens, so `sequential` pays its exp and its memory traffic
// once per token and fusion. These kernels do what a CPU is good at instead:
//   - one task per (batch element, block of CW channels); the channels sit on the vector lanes
//     and the task's (n, CW) state stays in L1 for the whole sequence; the tasks run on XLA's
//     intra-op thread pool;
//   - the sequence is walked in blocks of T tokens. Each block is first discretised in bulk,
//     a = exp(delta A) for its (T, n, CW) elements and delta u for its (T, CW), with a
//     vectorised exp; then only the cheap recurrence runs token by token, reading y out as it
//     goes (SPEC section 3's recurrence with r = 0 when there is no residual).
// The backward kernel walks the blocks in reverse: it discretises the block again, recomputes
// the block's states from the state the forward saved entering it (nothing of size (l, n, d) is
// stored), then pulls the cotangent back through the block token by token. With W_t the
// cotangent of the exclusive state a_t h_{t-1} + r_{t-1}, and P the cotangent reaching h_t from
// later tokens (carried, so that the masked case never subtracts):
//   W_t = P + e_t (e_t = dy_t C_t),  dL/dh_t = P if masked else W_t,  P <- a_t W_t,
//   R_{t-1} = R_t + W_t (the residual's running sum),  dx_t = dL/dh_t + a_t R_t,
//   da_t = W_t h_{t-1} + R_t x_t,  with x_t = delta_t u_t B_t.
// Reverse scans run natively: scan step s reads token l-1-s.
//
// Arrays are float32, row-major: u, delta, y (b, l, d); At = A transposed (n, d); B, C (b, l, n).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t CW = 64;  // channels per task: 4 AVX-512 or 8 AVX2 vectors

// exp(x), vectorisable: 2^k exp(r) with |r| <= ln2 / 2 and Cephes' minimax polynomial for
// exp(r), x clamped to [-87.3, 88.7]. Within 2 ulp of exp on [-87.3, 0], where a scan's
// delta A lies (tests/cpu).
inline float vexp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  const float k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// The shapes of one call and where a task's channels and tokens are.
struct Geometry {
  int64_t b, l, d, n, T;
  bool reverse;
  int64_t blocks() const { return (l + T - 1) / T; }
  int64_t channel_blocks() const { return (d + CW - 1) / CW; }
  int64_t token(int64_t step) const { return reverse ? l - 1 - step : step; }  // scan step -> token
};

// One block of one task, discretised: a (T, n, CW), delta (T, CW), u (T, CW), delta u (T, CW).
// Lanes past the last channel hold delta = u = A = 0: a = 1, nothing enters, nothing leaves.
struct Block {
  std::vector<float> a, delta, u, du;
  Block(const Geometry& g) : a(g.T * g.n * CW), delta(g.T * CW), u(g.T * CW), du(g.T * CW) {}

  void discretise(const Geometry& g, const float* U, const float* Delta, const float* Ac,
                  int64_t i, int64_t c0, int64_t s0, int64_t tn) {
    const int64_t w = std::min(CW, g.d - c0);
    for (int64_t s = 0; s < tn; ++s) {
      const int64_t row = (i * g.l + g.token(s0 + s)) * g.d + c0;
      float* dl = &delta[s * CW];
      float* uu = &u[s * CW];
      for (int64_t c = 0; c < CW; ++c) {
        dl[c] = c < w ? Delta[row + c] : 0.f;
        uu[c] = c < w ? U[row + c] : 0.f;
        du[s * CW + c] = dl[c] * uu[c];
      }
      for (int64_t k = 0; k < g.n; ++k) {
        float* as = &a[(s * g.n + k) * CW];
        const float* Ak = &Ac[k * CW];
#pragma omp simd
        for (int64_t c = 0; c < CW; ++c) as[c] = vexp(dl[c] * Ak[c]);
      }
    }
  }
};

// A task's columns of At: (n, CW), zero past the last channel.
std::vector<float> task_A(const Geometry& g, const float* At, int64_t c0) {
  std::vector<float> Ac(g.n * CW, 0.f);
  const int64_t w = std::min(CW, g.d - c0);
  for (int64_t k = 0; k < g.n; ++k)
    for (int64_t c = 0; c < w; ++c) Ac[k * CW + c] = At[k * g.d + c0 + c];
  return Ac;
}

// Runs task(0 .. count-1) on the intra-op pool; the calling thread takes tasks too, so the call
// completes even when no pool thread is free (no waiting on helpers that never started).
void parallel_for(ffi::ThreadPool& pool, int64_t count, std::function<void(int64_t)> task) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
    int64_t count;
    std::function<void(int64_t)> task;
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto shared = std::make_shared<Shared>();
  shared->count = count;
  shared->task = std::move(task);
  auto drain = [](const std::shared_ptr<Shared>& s) {
    for (int64_t i; (i = s->next.fetch_add(1)) < s->count;) {
      s->task(i);
      if (s->done.fetch_add(1) + 1 == s->count) {
        std::lock_guard<std::mutex> lock(s->mutex);
        s->finished.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([shared, drain] { drain(shared); });
  drain(shared);
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->finished.wait(lock, [&] { return shared->done.load() == shared->count; });
}

template <bool MASK, bool RESIDUAL>
void forward_task(const Geometry& g, const float* U, const float* Delta, const float* At,
                  const float* Bm, const float* Cm, float* Y, float* saved_h, float* saved_r,
                  int64_t task) {
  const int64_t i = task / g.channel_blocks(), c0 = (task % g.channel_blocks()) * CW;
  const int64_t w = std::min(CW, g.d - c0), n = g.n;
  const std::vector<float> Ac = task_A(g, At, c0);
  std::vector<float> h(n * CW, 0.f), r(RESIDUAL ? n * CW : 0, 0.f);
  Block blk(g);
  alignas(64) float acc[CW];
  for (int64_t j = 0; j < g.blocks(); ++j) {
    if (saved_h != nullptr) {  // the state entering block j: (b, blocks, n, d)
      for (int64_t k = 0; k < n; ++k) {
        const int64_t at = ((i * g.blocks() + j) * n + k) * g.d + c0;
        std::copy_n(&h[k * CW], w, saved_h + at);
        if (RESIDUAL) std::copy_n(&r[k * CW], w, saved_r + at);
      }
    }
    const int64_t s0 = j * g.T, tn = std::min(g.T, g.l - s0);
    blk.discretise(g, U, Delta, Ac.data(), i, c0, s0, tn);
    for (int64_t s = 0; s < tn; ++s) {
      const int64_t row = i * g.l + g.token(s0 + s);
      const float* du = &blk.du[s * CW];
      std::fill_n(acc, CW, 0.f);
      for (int64_t k = 0; k < n; ++k) {
        const float Bk = Bm[row * n + k], Ck = Cm[row * n + k];
        const float* a = &blk.a[(s * n + k) * CW];
        float* hk = &h[k * CW];
        float* rk = RESIDUAL ? &r[k * CW] : nullptr;
#pragma omp simd
        for (int64_t c = 0; c < CW; ++c) {
          const float x = du[c] * Bk;
          const float exclusive = RESIDUAL ? a[c] * hk[c] + rk[c] : a[c] * hk[c];
          if (RESIDUAL) rk[c] += a[c] * x;
          hk[c] = exclusive + x;
          acc[c] += (MASK ? exclusive : hk[c]) * Ck;
        }
      }
      std::copy_n(acc, w, Y + row * g.d + c0);
    }
  }
}

template <bool MASK, bool RESIDUAL>
void backward_task(const Geometry& g, const float* U, const float* Delta, const float* At,
                   const float* Bm, const float* Cm, const float* dY, const float* saved_h,
                   const float* saved_r, float* dU, float* dDelta, float* dA_part, float* dB_part,
                   float* dC_part, int64_t task) {
  const int64_t cb = task % g.channel_blocks(), i = task / g.channel_blocks();
  const int64_t c0 = cb * CW, w = std::min(CW, g.d - c0), n = g.n;
  const std::vector<float> Ac = task_A(g, At, c0);
  std::vector<float> P(n * CW, 0.f), R(RESIDUAL ? n * CW : 0, 0.f), dA(n * CW, 0.f);
  std::vector<float> h(n * CW), r(RESIDUAL ? n * CW : 0), before(g.T * n * CW);
  Block blk(g);
  alignas(64) float dy[CW], dx_B[CW], dlog_a_A[CW];
  // dB_part and dC_part: (channel_blocks, b, l, n), this task's channels summed.
  auto part = [&](float* buf, int64_t row, int64_t k) -> float& {
    return buf[((cb * g.b) * g.l + row) * n + k];
  };
  for (int64_t j = g.blocks() - 1; j >= 0; --j) {
    const int64_t s0 = j * g.T, tn = std::min(g.T, g.l - s0);
    blk.discretise(g, U, Delta, Ac.data(), i, c0, s0, tn);
    for (int64_t k = 0; k < n; ++k) {  // the saved state entering the block
      const int64_t at = ((i * g.blocks() + j) * n + k) * g.d + c0;
      for (int64_t c = 0; c < CW; ++c) {
        h[k * CW + c] = c < w ? saved_h[at + c] : 0.f;
        if (RESIDUAL) r[k * CW + c] = c < w ? saved_r[at + c] : 0.f;
      }
    }
    // Recompute the block: the state before each token, and C's gradient from the readout.
    for (int64_t s = 0; s < tn; ++s) {
      const int64_t row = i * g.l + g.token(s0 + s);
      for (int64_t c = 0; c < CW; ++c) dy[c] = c < w ? dY[row * g.d + c0 + c] : 0.f;
      const float* du = &blk.du[s * CW];
      for (int64_t k = 0; k < n; ++k) {
        const float Bk = Bm[row * n + k];
        const float* a = &blk.a[(s * n + k) * CW];
        float* hk = &h[k * CW];
        float* rk = RESIDUAL ? &r[k * CW] : nullptr;
        float* hb = &before[(s * n + k) * CW];
        float dCk = 0.f;
#pragma omp simd reduction(+ : dCk)
        for (int64_t c = 0; c < CW; ++c) {
          hb[c] = hk[c];
          const float x = du[c] * Bk;
          const float exclusive = RESIDUAL ? a[c] * hk[c] + rk[c] : a[c] * hk[c];
          if (RESIDUAL) rk[c] += a[c] * x;
          hk[c] = exclusive + x;
          dCk += dy[c] * (MASK ? exclusive : hk[c]);
        }
        part(dC_part, row, k) = dCk;
      }
    }
    // Pull the cotangent back through the block, last token first.
    for (int64_t s = tn - 1; s >= 0; --s) {
      const int64_t row = i * g.l + g.token(s0 + s);
      for (int64_t c = 0; c < CW; ++c) dy[c] = c < w ? dY[row * g.d + c0 + c] : 0.f;
      std::fill_n(dx_B, CW, 0.f);
      std::fill_n(dlog_a_A, CW, 0.f);
      const float* du = &blk.du[s * CW];
      const float* dl = &blk.delta[s * CW];
      for (int64_t k = 0; k < n; ++k) {
        const float Bk = Bm[row * n + k], Ck = Cm[row * n + k];
        const float* a = &blk.a[(s * n + k) * CW];
        const float* hb = &before[(s * n + k) * CW];
        const float* Ak = &Ac[k * CW];
        float* Pk = &P[k * CW];
        float* Rk = RESIDUAL ? &R[k * CW] : nullptr;
        float* dAk = &dA[k * CW];
        float dBk = 0.f;
#pragma omp simd reduction(+ : dBk)
        for (int64_t c = 0; c < CW; ++c) {
          const float W = Pk[c] + dy[c] * Ck;
          const float dh = MASK ? Pk[c] : W;
          const float x = du[c] * Bk;
          const float dx = RESIDUAL ? dh + a[c] * Rk[c] : dh;
          const float da = RESIDUAL ? W * hb[c] + Rk[c] * x : W * hb[c];
          if (RESIDUAL) Rk[c] += W;
          Pk[c] = a[c] * W;
          dx_B[c] += dx * Bk;
          dBk += dx * du[c];
          const float dlog_a = da * a[c];  // a = exp(delta A)
          dlog_a_A[c] += dlog_a * Ak[c];
          dAk[c] += dlog_a * dl[c];
        }
        part(dB_part, row, k) = dBk;
      }
      const float* uu = &blk.u[s * CW];
      for (int64_t c = 0; c < w; ++c) {
        dU[row * g.d + c0 + c] = dx_B[c] * dl[c];
        dDelta[row * g.d + c0 + c] = dx_B[c] * uu[c] + dlog_a_A[c];
      }
    }
  }
  for (int64_t k = 0; k < n; ++k)  // dA_part: (b, n, d), summed over the batch by the caller
    std::copy_n(&dA[k * CW], w, dA_part + (i * n + k) * g.d + c0);
}

using Dims = ffi::Span<const int64_t>;

std::string shape_text(Dims dims) {
  std::string text = "(";
  for (size_t k = 0; k < dims.size(); ++k) text += (k ? ", " : "") + std::to_string(dims[k]);
  return text + (dims.size() == 1 ? ",)" : ")");
}

// The entry's checks: every size comes from u (b, l, d) and At (n, d), and each other buffer,
// argument or result, must have the shape they make of it; a mismatch is an InvalidArgument
// error naming the operand (a raw ffi_call past the Python checks), never a read or write out
// of bounds. The first mismatch is kept.
struct Shapes {
  const char* kernel;
  Dims u, At;
  ffi::Error error;

  Shapes& expect(const char* name, Dims dims, const std::vector<int64_t>& want) {
    if (error.success() && !(dims == Dims(want)))
      error = ffi::Error::InvalidArgument(
          std::string(kernel) + ": " + name + " has shape " + shape_text(dims) + ", expected " +
          shape_text(Dims(want)) + " (u is " + shape_text(u) + ", At " + shape_text(At) + ")");
    return *this;
  }
};

// The geometry of (u, At) and a block of T tokens, or an InvalidArgument error naming u, At or
// the block when they make none.
ffi::Error geometry(const char* kernel, Dims u, Dims At, int64_t T, bool reverse, Geometry& g) {
  const std::string where = std::string(kernel) + ": ";
  if (u.size() != 3)
    return ffi::Error::InvalidArgument(where + "u has shape " + shape_text(u) +
                                       ", expected (b, l, d)");
  if (At.size() != 2 || At[1] != u[2])
    return ffi::Error::InvalidArgument(where + "At (A transposed) has shape " + shape_text(At) +
                                       ", expected (n, d) with d = " + std::to_string(u[2]));
  if (T < 1)
    return ffi::Error::InvalidArgument(where + "block must be >= 1 tokens, got " +
                                       std::to_string(T));
  g = Geometry{u[0], u[1], u[2], At[0], T, reverse};
  return ffi::Error::Success();
}

// mask_diagonal and residual chosen at run time, compiled as four branch-free variants.
template <template <bool, bool> class Kernel, typename... Args>
void dispatch(bool mask, bool residual, Args&&... args) {
  if (mask && residual) Kernel<true, true>::run(std::forward<Args>(args)...);
  else if (mask) Kernel<true, false>::run(std::forward<Args>(args)...);
  else if (residual) Kernel<false, true>::run(std::forward<Args>(args)...);
  else Kernel<false, false>::run(std::forward<Args>(args)...);
}

template <bool MASK, bool RESIDUAL>
struct Forward {
  static void run(ffi::ThreadPool& pool, const Geometry& g, const float* U, const float* Delta,
                  const float* At, const float* B, const float* C, float* Y, float* saved_h,
                  float* saved_r) {
    parallel_for(pool, g.b * g.channel_blocks(), [&](int64_t task) {
      forward_task<MASK, RESIDUAL>(g, U, Delta, At, B, C, Y, saved_h, saved_r, task);
    });
  }
};

template <bool MASK, bool RESIDUAL>
struct Backward {
  static void run(ffi::ThreadPool& pool, const Geometry& g, const float* U, const float* Delta,
                  const float* At, const float* B, const float* C, const float* dY,
                  const float* saved_h, const float* saved_r, float* dU, float* dDelta,
                  float* dA_part, float* dB_part, float* dC_part) {
    parallel_for(pool, g.b * g.channel_blocks(), [&](int64_t task) {
      backward_task<MASK, RESIDUAL>(g, U, Delta, At, B, C, dY, saved_h, saved_r, dU, dDelta,
                                    dA_part, dB_part, dC_part, task);
    });
  }
};

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

// y only (inference, or a forward nobody differentiates).
ffi::Error ScanForwardImpl(ffi::ThreadPool pool, F32 u, F32 delta, F32 At, F32 B, F32 C, Out y,
                           int64_t block, bool reverse, bool mask, bool residual) {
  Geometry g;
  ffi::Error error =
      geometry("VmpScanForward", u.dimensions(), At.dimensions(), block, reverse, g);
  if (error.failure()) return error;
  Shapes shapes{"VmpScanForward", u.dimensions(), At.dimensions()};
  shapes.expect("delta", delta.dimensions(), {g.b, g.l, g.d})
      .expect("B", B.dimensions(), {g.b, g.l, g.n})
      .expect("C", C.dimensions(), {g.b, g.l, g.n})
      .expect("y", y->dimensions(), {g.b, g.l, g.d});
  if (shapes.error.failure()) return shapes.error;
  dispatch<Forward>(mask, residual, pool, g, u.typed_data(), delta.typed_data(), At.typed_data(),
                    B.typed_data(), C.typed_data(), y->typed_data(), nullptr, nullptr);
  return ffi::Error::Success();
}

// y and the state entering each block, (b, blocks, n, d): h, and r (zeros without the residual).
ffi::Error ScanForwardSavingImpl(ffi::ThreadPool pool, F32 u, F32 delta, F32 At, F32 B, F32 C,
                                 Out y, Out saved_h, Out saved_r, int64_t block, bool reverse,
                                 bool mask, bool residual) {
  Geometry g;
  ffi::Error error =
      geometry("VmpScanForwardSaving", u.dimensions(), At.dimensions(), block, reverse, g);
  if (error.failure()) return error;
  const std::vector<int64_t> saved{g.b, g.blocks(), g.n, g.d};
  Shapes shapes{"VmpScanForwardSaving", u.dimensions(), At.dimensions()};
  shapes.expect("delta", delta.dimensions(), {g.b, g.l, g.d})
      .expect("B", B.dimensions(), {g.b, g.l, g.n})
      .expect("C", C.dimensions(), {g.b, g.l, g.n})
      .expect("y", y->dimensions(), {g.b, g.l, g.d})
      .expect("saved_h", saved_h->dimensions(), saved)
      .expect("saved_r", saved_r->dimensions(), saved);
  if (shapes.error.failure()) return shapes.error;
  float* r = saved_r->typed_data();
  if (!residual) std::fill_n(r, saved_r->element_count(), 0.f);
  dispatch<Forward>(mask, residual, pool, g, u.typed_data(), delta.typed_data(), At.typed_data(),
                    B.typed_data(), C.typed_data(), y->typed_data(), saved_h->typed_data(),
                    residual ? r : nullptr);
  return ffi::Error::Success();
}

// du, ddelta (b, l, d); dA per batch element (b, n, d); dB, dC per channel block (cb, b, l, n).
ffi::Error ScanBackwardImpl(ffi::ThreadPool pool, F32 u, F32 delta, F32 At, F32 B, F32 C, F32 dy,
                            F32 saved_h, F32 saved_r, Out du, Out ddelta, Out dA_part,
                            Out dB_part, Out dC_part, int64_t block, bool reverse, bool mask,
                            bool residual) {
  Geometry g;
  ffi::Error error =
      geometry("VmpScanBackward", u.dimensions(), At.dimensions(), block, reverse, g);
  if (error.failure()) return error;
  const std::vector<int64_t> bld{g.b, g.l, g.d}, bln{g.b, g.l, g.n},
      saved{g.b, g.blocks(), g.n, g.d}, parts{g.channel_blocks(), g.b, g.l, g.n};
  Shapes shapes{"VmpScanBackward", u.dimensions(), At.dimensions()};
  shapes.expect("delta", delta.dimensions(), bld)
      .expect("B", B.dimensions(), bln)
      .expect("C", C.dimensions(), bln)
      .expect("dy", dy.dimensions(), bld)
      .expect("saved_h", saved_h.dimensions(), saved)
      .expect("saved_r", saved_r.dimensions(), saved)
      .expect("du", du->dimensions(), bld)
      .expect("ddelta", ddelta->dimensions(), bld)
      .expect("dA_part", dA_part->dimensions(), {g.b, g.n, g.d})
      .expect("dB_part", dB_part->dimensions(), parts)
      .expect("dC_part", dC_part->dimensions(), parts);
  if (shapes.error.failure()) return shapes.error;
  dispatch<Backward>(mask, residual, pool, g, u.typed_data(), delta.typed_data(),
                     At.typed_data(), B.typed_data(), C.typed_data(), dy.typed_data(),
                     saved_h.typed_data(), saved_r.typed_data(), du->typed_data(),
                     ddelta->typed_data(), dA_part->typed_data(), dB_part->typed_data(),
                     dC_part->typed_data());
  return ffi::Error::Success();
}

}  // namespace

#define VMP_SCAN_ATTRS                                                                     \
  .Attr<int64_t>("block").Attr<bool>("reverse").Attr<bool>("mask_diagonal").Attr<bool>( \
      "residual")

XLA_FFI_DEFINE_HANDLER_SYMBOL(VmpScanForward, ScanForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>() VMP_SCAN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(VmpScanForwardSaving, ScanForwardSavingImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>() VMP_SCAN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(VmpScanBackward, ScanBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>() VMP_SCAN_ATTRS);
