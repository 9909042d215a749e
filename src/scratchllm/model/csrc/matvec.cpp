// Matrix-vector products for decoding on x86 CPUs with AVX2 + FMA: y[m, n] = scale[n] * sum_k x[m, k] * w[n, k],
// for float32, bfloat16 and int8 weights (int8 with one scale per row, as scratchllm.model.quantize stores them).
//
// Decoding one token multiplies one activation row by every weight matrix, reading each weight once: the
// speed is the speed of streaming the weights from memory. This kernel does only that. It walks the weight
// matrix in its own row-major layout, eight rows at a time, with one 8-wide FMA accumulator per row, and
// splits the rows between PyTorch's threads. With a few activation rows (a small batch) each group of eight
// weight rows is read from memory once and then from the L1 cache for the other activation rows.
// bf16 and int8 weights are widened to fp32 on the fly (a bf16 number is the top 16 bits of an fp32 one; an
// int8 one converts exactly), and every sum is accumulated in fp32; an int8 row's sum is multiplied by its scale.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace {

constexpr int64_t kTile = 8;  // weight rows per pass: eight independent accumulators keep both FMA units busy

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }

inline __m256 load8(const c10::BFloat16* p) {
  // Eight 16-bit values -> eight 32-bit lanes, shifted into the high half: exactly the fp32 numbers.
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline __m256 load8(const int8_t* p) {
  // Eight signed bytes -> eight 32-bit integers -> eight floats (every int8 value is exact in fp32).
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

inline float widen(float v) { return v; }
inline float widen(c10::BFloat16 v) { return static_cast<float>(v); }
inline float widen(int8_t v) { return static_cast<float>(v); }

// Software prefetch for bf16 and int8 weights. A tile of eight such rows is one contiguous block of 16 k (or
// 8 k) bytes, but it is read as eight short interleaved streams, too short for the hardware prefetcher to lock
// on: measured on SmolLM2-135M's matrices, asking for the block kPrefetchTiles tiles ahead while computing this
// one (a few cache lines per step) cut the time of a decoding step's bf16 products by about a quarter. fp32
// rows are twice as long again and gained nothing, so fp32 does not prefetch.
constexpr int64_t kPrefetchTiles = 4;

template <typename W>
constexpr bool kPrefetch = sizeof(W) < 4;

// y[i, r..r+T) for every activation row i: T dot products of weight rows r..r+T with x[i] (fp32 [m, k]), each
// times its row's scale when there are scales. Prefetches [ahead, end): the block kPrefetchTiles tiles ahead,
// spread over the steps of the first row.
template <int T, typename W>
void dot_rows(const float* x, int64_t m, const W* w, const float* scale, int64_t k, int64_t n, int64_t r, float* y,
              const char* ahead, const char* end) {
  const int64_t k8 = k - k % 8;
  const int64_t lines = (T * k * static_cast<int64_t>(sizeof(W)) + 63) / 64;
  const int64_t lines_per_step = k8 > 0 ? (lines + k8 / 8 - 1) / (k8 / 8) : 0;
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * k;
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    const char* fetch = ahead;
    for (int64_t c = 0; c < k8; c += 8) {
      if (kPrefetch<W> && i == 0) {
        for (int64_t j = 0; j < lines_per_step && fetch < end; ++j, fetch += 64) _mm_prefetch(fetch, _MM_HINT_T0);
      }
      const __m256 xv = _mm256_loadu_ps(xi + c);
      for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(load8(w + (r + t) * k + c), xv, acc[t]);
    }
    for (int t = 0; t < T; ++t) {
      float s = horizontal_sum(acc[t]);
      for (int64_t c = k8; c < k; ++c) s += widen(w[(r + t) * k + c]) * xi[c];  // the last k % 8 columns
      y[i * n + r + t] = scale ? s * scale[r + t] : s;
    }
  }
}

// Rows [n0, n1) of y: whole tiles of kTile weight rows, then the rest one row at a time.
template <typename W>
void matvec_rows(const float* x, int64_t m, const W* w, const float* scale, int64_t k, int64_t n, int64_t n0,
                 int64_t n1, float* y) {
  const char* end = reinterpret_cast<const char*>(w + n1 * k);  // this thread's band only
  int64_t r = n0;
  for (; r + kTile <= n1; r += kTile) {
    const char* ahead = reinterpret_cast<const char*>(w + std::min(r + kPrefetchTiles * kTile, n1) * k);
    dot_rows<kTile>(x, m, w, scale, k, n, r, y, ahead, end);
  }
  for (; r < n1; ++r) dot_rows<1>(x, m, w, scale, k, n, r, y, end, end);
}

at::Tensor matvec(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& scale) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2, "matvec: expected x [m, k] and weight [n, k], got ", x.sizes(),
              " and ", weight.sizes());
  TORCH_CHECK(x.size(1) == weight.size(1), "matvec: x has ", x.size(1), " columns, weight has ", weight.size(1));
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "matvec: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "matvec: x must be float32 or bfloat16, got ", x.scalar_type());
  const bool int8 = weight.scalar_type() == at::kChar;
  if (int8) {
    TORCH_CHECK(scale.has_value() && scale->dim() == 1 && scale->size(0) == weight.size(0),
                "matvec: int8 weights need one scale per row (", weight.size(0), ")");
  } else {
    TORCH_CHECK(weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16,
                "matvec: float32, bfloat16 or int8 weights only, got ", weight.scalar_type());
    TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "matvec: x is ", x.scalar_type(), ", weight is ",
                weight.scalar_type());
    TORCH_CHECK(!scale.has_value(), "matvec: scales go with int8 weights only");
  }
  const at::Tensor w = weight.contiguous();
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const at::Tensor sf = int8 ? scale->to(at::kFloat).contiguous() : at::Tensor();
  const float* sp = int8 ? sf.const_data_ptr<float>() : nullptr;
  const int64_t m = xf.size(0), k = xf.size(1), n = w.size(0);
  at::Tensor y = at::empty({m, n}, xf.options());
  const float* xp = xf.const_data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Each thread takes a band of whole tiles; a grain of 8 tiles keeps tiny matrices on one thread.
  const int64_t tiles = (n + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 8, [&](int64_t t0, int64_t t1) {
    const int64_t n0 = t0 * kTile, n1 = std::min(n, t1 * kTile);
    switch (w.scalar_type()) {
      case at::kFloat:
        matvec_rows(xp, m, w.const_data_ptr<float>(), sp, k, n, n0, n1, yp);
        break;
      case at::kBFloat16:
        matvec_rows(xp, m, w.const_data_ptr<c10::BFloat16>(), sp, k, n, n0, n1, yp);
        break;
      default:
        matvec_rows(xp, m, w.const_data_ptr<int8_t>(), sp, k, n, n0, n1, yp);
    }
  });
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

}  // namespace

// The operator's namespace is scratchllm_<hash of this file> (set by matvec.py): a compiled graph cached on disk
// by torch.compile names the operator it calls, so a changed kernel can never be called through an old graph.
#ifndef SCRATCHLLM_OPS
#define SCRATCHLLM_OPS scratchllm
#endif
#define SCRATCHLLM_LIBRARY(ns, lib) TORCH_LIBRARY(ns, lib)  // expands SCRATCHLLM_OPS before TORCH_LIBRARY pastes it
#define SCRATCHLLM_LIBRARY_IMPL(ns, key, lib) TORCH_LIBRARY_IMPL(ns, key, lib)

SCRATCHLLM_LIBRARY(SCRATCHLLM_OPS, lib) { lib.def("matvec(Tensor x, Tensor weight, Tensor? scale=None) -> Tensor"); }

SCRATCHLLM_LIBRARY_IMPL(SCRATCHLLM_OPS, CPU, lib) { lib.impl("matvec", &matvec); }
