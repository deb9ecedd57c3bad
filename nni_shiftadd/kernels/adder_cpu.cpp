// CPU kernels of the adder (AdderNet) operator, for float32 and float64.
//
// Both kernels work on "column" matrices, per group g:
//   W [G][O][K]   weights, one row per output channel
//   B [G][K][P]   im2col'ed inputs, one column per output position
//   C [G][O][P]   outputs
//
// l1mm:     C[o][p] = -sum_k |B[k][p] - W[o][k]|
//           computed as 2 * sum_k min(B, W) - sum_k B - sum_k W, which needs two vector operations
//           (min, add) per term instead of three (sub, abs, add).
// htmm:     D[k][p] = sum_o G[o][p] * clamp(W[o][k] - B[k][p], -1, 1)
//           computed as sum_o G[o][p] * min(max(W, B - 1), B + 1) - B[k][p] * sum_o G[o][p]:
//           three vector operations (max, min, fma) per term.
//
// Both are register-blocked micro-kernels over a zero-padded panel of NR vectors of columns, written with
// GCC vector extensions so that the same source compiles to AVX-512, AVX2, SSE or NEON. NaN in either
// operand propagates to the output.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#define NSA_VBYTES 64
#elif defined(__AVX__)
#define NSA_VBYTES 32
#else
#define NSA_VBYTES 16
#endif

typedef float vf __attribute__((vector_size(NSA_VBYTES)));
typedef float vf_u __attribute__((vector_size(NSA_VBYTES), aligned(4)));
typedef double vd __attribute__((vector_size(NSA_VBYTES)));
typedef double vd_u __attribute__((vector_size(NSA_VBYTES), aligned(8)));

template <typename T> struct Vec;
template <> struct Vec<float> { typedef vf v; typedef vf_u u; };
template <> struct Vec<double> { typedef vd v; typedef vd_u u; };

template <typename T> struct Blocking {
  static constexpr int V = NSA_VBYTES / sizeof(T);
  // forward: MR output rows x NR vectors of columns; backward: KR rows x NR vectors. NR shrinks for narrow
  // problems (a Linear layer over 30 tokens) so that little of a panel is padding, and MR and KR grow as it
  // shrinks, keeping enough independent accumulators (and operand reuse) within the vector registers.
#if NSA_VBYTES == 64
  static constexpr int NR_MAX = 4;
  static constexpr int mr(int nr) { return nr == 4 ? 4 : 8; }
  static constexpr int kr(int nr) { return nr == 4 ? 2 : (nr == 2 ? 4 : 8); }
#else
  static constexpr int NR_MAX = 2;
  static constexpr int mr(int nr) { return nr == 2 ? 4 : 8; }
  static constexpr int kr(int nr) { return nr == 2 ? 2 : 4; }
#endif
};

template <typename T> struct Lanes;
template <> struct Lanes<float> { typedef int32_t i __attribute__((vector_size(NSA_VBYTES))); };
template <> struct Lanes<double> { typedef int64_t i __attribute__((vector_size(NSA_VBYTES))); };
template <typename VT, typename T> static inline VT vbroadcast(T s) {
  VT first = {s};
  return __builtin_shuffle(first, typename Lanes<T>::i{});
}

// Copies columns [p0, p0 + width) of the rows x P matrix src into a rows x PW zero-padded panel, and
// writes each padded column's sum over the rows to colsum.
template <typename T, int PW>
static void pack_panel(const T* src, int64_t rows, int64_t P, int64_t p0, int64_t width, T* panel, T* colsum) {
  typedef typename Vec<T>::v v;
  typedef typename Vec<T>::u u;
  constexpr int V = Blocking<T>::V, NV = PW / V;
  if (width == PW) {  // a full panel: whole vectors, the column sums in registers
    v sum[NV];
    for (int j = 0; j < NV; ++j) sum[j] = vbroadcast<v, T>(T(0));
    for (int64_t r = 0; r < rows; ++r) {
      const T* s = src + r * P + p0;
      for (int j = 0; j < NV; ++j) {
        v x = *reinterpret_cast<const u*>(s + j * V);
        *reinterpret_cast<v*>(panel + r * PW + j * V) = x;
        sum[j] += x;
      }
    }
    for (int j = 0; j < NV; ++j) *reinterpret_cast<u*>(colsum + j * V) = sum[j];
    return;
  }
  for (int j = 0; j < PW; ++j) colsum[j] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * P + p0;
    T* d = panel + r * PW;
    int64_t j = 0;
    for (; j < width; ++j) { d[j] = s[j]; colsum[j] += s[j]; }
    for (; j < PW; ++j) d[j] = 0;
  }
}

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Splits `rows` into blocks (multiples of `unit`) so that there are at least ~4 tasks per thread.
static inline int64_t row_block(int64_t rows, int64_t other_tasks, int nthreads, int64_t unit) {
  int64_t want = std::max<int64_t>(1, ceil_div(4 * nthreads, std::max<int64_t>(1, other_tasks)));
  int64_t block = ceil_div(ceil_div(rows, want), unit) * unit;
  return std::max<int64_t>(unit * 4 < rows ? unit * 4 : unit, block);
}

template <typename T> static inline T* align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// Whether all PW values of a packed row are finite, in vector operations (x - x is NaN for inf and NaN).
template <typename T, int PW> static inline bool row_finite(const T* row) {
  typedef typename Vec<T>::v v;
  constexpr int V = Blocking<T>::V;
  v acc = vbroadcast<v, T>(T(0));
  for (int j = 0; j < PW / V; ++j) {
    v x = *reinterpret_cast<const v*>(row + j * V);
    acc += x - x;
  }
  for (int l = 0; l < V; ++l)
    if (acc[l] != T(0)) return false;
  return true;
}

// sum of x[0..n), in vector partial sums: a scalar running sum is one add latency per element, which for a
// Linear layer's weight (millions of values, each used by only a few tokens) costs as much as the product.
template <typename T> static T row_sum(const T* x, int64_t n) {
  typedef typename Vec<T>::v v;
  typedef typename Vec<T>::u u;
  constexpr int V = Blocking<T>::V;
  v acc[4];
  for (int a = 0; a < 4; ++a) acc[a] = vbroadcast<v, T>(T(0));
  int64_t i = 0;
  for (; i + 4 * V <= n; i += 4 * V)
    for (int a = 0; a < 4; ++a) acc[a] += *reinterpret_cast<const u*>(x + i + a * V);
  v total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  T s = 0;
  for (int l = 0; l < V; ++l) s += total[l];
  for (; i < n; ++i) s += x[i];
  return s;
}

// -sum_k |x[k] - w[k]| for one packed column (x strided by PW): the slow, exact form for non-finite inputs.
template <typename T> static T direct_l1(const T* w, const T* x, int64_t K, int64_t PW) {
  T s = 0;
  for (int64_t k = 0; k < K; ++k) s += std::fabs(x[k * PW] - w[k]);
  return -s;
}

// sum_o g[o] * clamp(w[o * K] - x, -1, 1) for one packed column (g strided by PW).
template <typename T> static T direct_ht(const T* w, const T* g, T x, int64_t O, int64_t K, int64_t PW) {
  T s = 0;
  for (int64_t o = 0; o < O; ++o) {
    T d = w[o * K] - x;
    d = d > T(1) ? T(1) : (d < T(-1) ? T(-1) : d);
    s += g[o * PW] * d;
  }
  return s;
}

// Splits P columns into a run of the widest panels and a remainder of narrower ones, so that a tail of a few
// columns (a batch chunk of 7x7 maps ends anywhere) is not a mostly zero-padded full panel: calls
// f(std::integral_constant<int, NR>, begin, end) for each part.
template <typename T, typename F> static void for_panel_widths(int64_t P, F f) {
  constexpr int V = Blocking<T>::V, NR_MAX = Blocking<T>::NR_MAX;
  const int64_t main = P / (NR_MAX * V) * (NR_MAX * V);
  if (main > 0) f(std::integral_constant<int, NR_MAX>{}, 0, main);
  const int64_t vecs = ceil_div(P - main, V);
  if (vecs == 0) return;
  if (vecs == 1) f(std::integral_constant<int, 1>{}, main, P);
  else if (vecs == 2 || NR_MAX == 2) f(std::integral_constant<int, 2>{}, main, P);
  else f(std::integral_constant<int, NR_MAX>{}, main, P);
}

template <typename T, int NR, int MR>
static inline void l1_micro(const T* __restrict w, int64_t K, const T* __restrict panel, T* __restrict acc_out) {
  typedef typename Vec<T>::v v;
  constexpr int V = Blocking<T>::V, PW = NR * V;
  v acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = vbroadcast<v, T>(T(0));
  const v two = vbroadcast<v, T>(T(2));
  for (int64_t k = 0; k < K; ++k) {
    v x[NR];
    for (int j = 0; j < NR; ++j) x[j] = *reinterpret_cast<const v*>(panel + k * PW + j * V);
    for (int i = 0; i < MR; ++i) {
      v wb = vbroadcast<v, T>(w[i * K + k]);
      // (x < w) ? x : w  keeps a NaN weight; a NaN input reaches the output through sum_k B. The factor 2
      // turns the accumulation into an FMA, which runs on other ports than the min.
      for (int j = 0; j < NR; ++j) acc[i][j] += two * ((x[j] < wb) ? x[j] : wb);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) *reinterpret_cast<v*>(acc_out + i * PW + j * V) = acc[i][j];
}

// l1_micro for the first `rows` (< R) of a block of R, with `rows` a compile-time constant.
template <typename T, int NR, int R>
static inline void l1_rows(int rows, const T* w, int64_t K, const T* panel, T* acc) {
  if constexpr (R > 0) {
    if (rows == R) l1_micro<T, NR, R>(w, K, panel, acc);
    else l1_rows<T, NR, R - 1>(rows, w, K, panel, acc);
  }
}

// Rows of a packed panel that fit in about 32 kB, the L1 cache: the block of the reduction over output channels
// that one pass of htmm's micro-kernels over the task's rows reads, so that the panel comes from L1, not L2.
template <typename T, int PW> static constexpr int64_t l1_rows_of_panel() {
  return std::max<int64_t>(16, 32768 / int64_t(PW * sizeof(T)));
}

// Columns [pb, pe) of C, in panels of NR vectors; wsum: W's row sums.
template <typename T, int NR>
static void l1mm_nr(const T* W, const T* wsum, const T* B, T* C, int64_t G, int64_t O, int64_t K, int64_t P,
                    int64_t pb, int64_t pe, int nthreads) {
  typedef typename Vec<T>::v v;
  typedef typename Vec<T>::u u;
  constexpr int MR = Blocking<T>::mr(NR), V = Blocking<T>::V, PW = NR * V;
  const int64_t npanel = ceil_div(pe - pb, PW);
  const int64_t oblock = row_block(O, G * npanel, nthreads, MR), noblock = ceil_div(O, oblock);
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> buf(K * PW + PW + MR * PW + 64);
    T* panel = align64(buf.data());
    T* colsum = panel + K * PW;
    T* acc = colsum + PW;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < G * npanel * noblock; ++t) {
      const int64_t g = t / (npanel * noblock), rest = t % (npanel * noblock);
      const int64_t p0 = pb + (rest / noblock) * PW, ob = rest % noblock;
      const int64_t width = std::min<int64_t>(PW, pe - p0);
      pack_panel<T, PW>(B + g * K * P, K, P, p0, width, panel, colsum);
      const bool fast_epilogue = width == PW && row_finite<T, PW>(colsum);
      const int64_t ob1 = std::min(O, (ob + 1) * oblock);
      for (int64_t o0 = ob * oblock; o0 < ob1; o0 += MR) {
        const int mr = int(std::min<int64_t>(MR, ob1 - o0));
        const T* w = W + (g * O + o0) * K;
        l1_rows<T, NR, MR>(mr, w, K, panel, acc);
        for (int i = 0; i < mr; ++i) {
          T* c = C + (g * O + o0 + i) * P + p0;
          const T ws = wsum[g * O + o0 + i];
          if (fast_epilogue && std::isfinite(ws)) {
            const v wsv = vbroadcast<v, T>(ws);
            for (int j = 0; j < NR; ++j)
              *reinterpret_cast<u*>(c + j * V) = *reinterpret_cast<const v*>(acc + i * PW + j * V) -
                                                  *reinterpret_cast<const v*>(colsum + j * V) - wsv;
            continue;
          }
          for (int64_t j = 0; j < width; ++j) {
            c[j] = acc[i * PW + j] - colsum[j] - ws;
            // An infinite operand makes the rewritten sum inf - inf: recompute the column directly.
            if (!std::isfinite(colsum[j]) || !std::isfinite(ws)) c[j] = direct_l1(w + i * K, panel + j, K, PW);
          }
        }
      }
    }
  }
}

template <typename T>
static void l1mm(const T* W, const T* B, T* C, int64_t G, int64_t O, int64_t K, int64_t P, int nthreads) {
  std::vector<T> wsum(G * O);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t r = 0; r < G * O; ++r) wsum[r] = row_sum(W + r * K, K);
  for_panel_widths<T>(P, [&](auto nr, int64_t pb, int64_t pe) {
    l1mm_nr<T, decltype(nr)::value>(W, wsum.data(), B, C, G, O, K, P, pb, pe, nthreads);
  });
}

// Adds (first: stores) sum_o gpanel[o][:] * clamp(W[o][k0 + i] - x_i, -1, 1) over o < oc to out[i][:], w pointing at
// W[o0][k0] (rows K apart); the last block of o also subtracts x_i * sum_o g (the rewritten HardTanh above).
template <typename T, int NR, int KR>
static inline void ht_micro(const T* __restrict w, int64_t K, int64_t oc, const T* __restrict xpanel,
                            const T* __restrict gpanel, const T* __restrict gsum, T* __restrict out, bool first,
                            bool last) {
  typedef typename Vec<T>::v v;
  constexpr int V = Blocking<T>::V, PW = NR * V;
  v lo[KR][NR], hi[KR][NR], acc[KR][NR];
  const v one = vbroadcast<v, T>(T(1));
  for (int i = 0; i < KR; ++i)
    for (int j = 0; j < NR; ++j) {
      v x = *reinterpret_cast<const v*>(xpanel + i * PW + j * V);
      lo[i][j] = x - one;
      hi[i][j] = x + one;
      acc[i][j] = first ? vbroadcast<v, T>(T(0)) : *reinterpret_cast<const v*>(out + i * PW + j * V);
    }
  for (int64_t o = 0; o < oc; ++o) {
    v gv[NR];
    for (int j = 0; j < NR; ++j) gv[j] = *reinterpret_cast<const v*>(gpanel + o * PW + j * V);
    for (int i = 0; i < KR; ++i) {
      v wb = vbroadcast<v, T>(w[o * K + i]);
      for (int j = 0; j < NR; ++j) {
        // Ordered so that a NaN weight survives both selections.
        v t = (lo[i][j] > wb) ? lo[i][j] : wb;
        t = (hi[i][j] < t) ? hi[i][j] : t;
        acc[i][j] += gv[j] * t;
      }
    }
  }
  for (int i = 0; i < KR; ++i)
    for (int j = 0; j < NR; ++j) {
      if (last) {
        v x = *reinterpret_cast<const v*>(xpanel + i * PW + j * V);
        acc[i][j] -= x * *reinterpret_cast<const v*>(gsum + j * V);
      }
      *reinterpret_cast<v*>(out + i * PW + j * V) = acc[i][j];
    }
}

template <typename T, int NR, int R>
static inline void ht_rows(int rows, const T* w, int64_t K, int64_t oc, const T* xp, const T* gpanel, const T* gsum,
                           T* out, bool first, bool last) {
  if constexpr (R > 0) {
    if (rows == R) ht_micro<T, NR, R>(w, K, oc, xp, gpanel, gsum, out, first, last);
    else ht_rows<T, NR, R - 1>(rows, w, K, oc, xp, gpanel, gsum, out, first, last);
  }
}

// W [G][O][K], B [G][K][P], Gr [G][O][P] -> D [G][K][P]. The reduction over o runs in blocks whose packed
// gradient rows fit in L1, each swept over all the task's rows of D; a block also touches few enough pages of W
// (one per o when W's rows are a page or more, as in a Linear layer) for the TLB to hold them.
template <typename T, int NR>
static void htmm_nr(const T* W, const T* B, const T* Gr, T* D, int64_t G, int64_t O, int64_t K, int64_t P,
                    int64_t pb, int64_t pe, int nthreads) {
  constexpr int KR = Blocking<T>::kr(NR), PW = NR * Blocking<T>::V;
  constexpr int64_t OC = l1_rows_of_panel<T, PW>();
  const int64_t npanel = ceil_div(pe - pb, PW);
  const int64_t kblock = row_block(K, G * npanel, nthreads, KR), nkblock = ceil_div(K, kblock);
  // With one block of o, each group of KR rows is finished at once and its accumulators reused by the next.
  const int64_t out_rows = O > OC ? kblock : KR;
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> buf(O * PW + (kblock + out_rows) * PW + 2 * PW + 64);
    T* gpanel = align64(buf.data());
    T* xpanel = gpanel + O * PW;
    T* out = xpanel + kblock * PW;
    T* gsum = out + out_rows * PW;
    T* xsum = gsum + PW;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < G * npanel * nkblock; ++t) {
      const int64_t g = t / (npanel * nkblock), rest = t % (npanel * nkblock);
      const int64_t p0 = pb + (rest / nkblock) * PW, kb0 = (rest % nkblock) * kblock;
      const int64_t kb1 = std::min(K, kb0 + kblock);
      const int64_t width = std::min<int64_t>(PW, pe - p0);
      pack_panel<T, PW>(Gr + g * O * P, O, P, p0, width, gpanel, gsum);
      pack_panel<T, PW>(B + (g * K + kb0) * P, kb1 - kb0, P, p0, width, xpanel, xsum);
      for (int64_t o0 = 0; o0 < O; o0 += OC) {
        const bool last = o0 + OC >= O;
        for (int64_t k0 = kb0; k0 < kb1; k0 += KR) {
          const int kr = int(std::min<int64_t>(KR, kb1 - k0));
          const T* xp = xpanel + (k0 - kb0) * PW;
          T* acc = out + (O > OC ? (k0 - kb0) * PW : 0);
          ht_rows<T, NR, KR>(kr, W + (g * O + o0) * K + k0, K, std::min(OC, O - o0), xp, gpanel + o0 * PW, gsum,
                             acc, o0 == 0, last);
          for (int i = 0; last && i < kr; ++i) {  // the rows are done: store them while they are in L1
            if (!row_finite<T, PW>(xp + i * PW))
              for (int64_t j = 0; j < width; ++j)  // x * sum(g) is inf - inf for an infinite x: recompute directly
                if (!std::isfinite(xp[i * PW + j]))
                  acc[i * PW + j] = direct_ht(W + g * O * K + k0 + i, gpanel + j, xp[i * PW + j], O, K, PW);
            std::memcpy(D + (g * K + k0 + i) * P + p0, acc + i * PW, width * sizeof(T));
          }
        }
      }
    }
  }
}

template <typename T>
static void htmm(const T* W, const T* B, const T* Gr, T* D, int64_t G, int64_t O, int64_t K, int64_t P,
                 int nthreads) {
  for_panel_widths<T>(P, [&](auto nr, int64_t pb, int64_t pe) {
    htmm_nr<T, decltype(nr)::value>(W, B, Gr, D, G, O, K, P, pb, pe, nthreads);
  });
}

// x [N][C][H][W] -> cols [G][K][N * Ho * Wo], K = C/G * kh * kw, rows ordered like the weight (c, ky, kx).
template <typename T>
static void im2col(const T* x, T* cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t kh,
                   int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t Ho,
                   int64_t Wo, int nthreads) {
  const int64_t L = Ho * Wo, NL = N * L, Cg = C / G, K = Cg * kh * kw;
#pragma omp parallel for num_threads(nthreads) schedule(static) collapse(2)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t kk = 0; kk < kh * kw; ++kk) {
      const int64_t ky = kk / kw, kx = kk % kw;
      T* row = cols + ((c / Cg) * K + (c % Cg) * kh * kw + kk) * NL;
      if (sh == 1 && sw == 1 && Wo == W) {
        // Output rows map onto consecutive input rows at one flat offset: the valid rows are one contiguous
        // copy, after which the |off| columns that wrapped around from a neighbouring row are zeroed.
        const int64_t dy = ky * dh - ph, off = kx * dw - pw;
        const int64_t y0 = std::min<int64_t>(Ho, std::max<int64_t>(0, -dy));
        const int64_t y1 = std::max<int64_t>(y0, std::min<int64_t>(Ho, H - dy));
        const int64_t lo = std::min<int64_t>(Wo, std::max<int64_t>(0, -off));
        const int64_t hi = std::max<int64_t>(lo, std::min<int64_t>(Wo, W - off));
        for (int64_t n = 0; n < N; ++n) {
          const T* src = x + (n * C + c) * H * W;
          T* dst = row + n * L;
          std::memset(dst, 0, y0 * Wo * sizeof(T));
          std::memset(dst + y1 * Wo, 0, (Ho - y1) * Wo * sizeof(T));
          if (y1 == y0) continue;
          const int64_t first = y0 * Wo + lo, last = (y1 - 1) * Wo + hi;  // flat range read inside the image
          for (int64_t i = y0 * Wo; i < first; ++i) dst[i] = T(0);
          if (last > first) std::memcpy(dst + first, src + first + dy * W + off, (last - first) * sizeof(T));
          for (int64_t i = std::max(first, last); i < y1 * Wo; ++i) dst[i] = T(0);
          for (int64_t oy = y0; oy < y1; ++oy) {
            for (int64_t ox = 0; ox < lo; ++ox) dst[oy * Wo + ox] = T(0);
            for (int64_t ox = hi; ox < Wo; ++ox) dst[oy * Wo + ox] = T(0);
          }
        }
        continue;
      }
      for (int64_t n = 0; n < N; ++n) {
        const T* src = x + (n * C + c) * H * W;
        for (int64_t oy = 0; oy < Ho; ++oy) {
          T* dst = row + n * L + oy * Wo;
          const int64_t iy = oy * sh - ph + ky * dh;
          if (iy < 0 || iy >= H) {
            std::memset(dst, 0, Wo * sizeof(T));
            continue;
          }
          const T* s = src + iy * W;
          if (sw == 1) {  // the valid outputs form one contiguous run: copy it, zero the borders
            const int64_t off = kx * dw - pw;  // ix = ox + off
            const int64_t lo = std::min<int64_t>(Wo, std::max<int64_t>(0, -off));
            const int64_t hi = std::max<int64_t>(lo, std::min<int64_t>(Wo, W - off));
            if (lo > 0) std::memset(dst, 0, lo * sizeof(T));
            if (hi > lo) std::memcpy(dst + lo, s + lo + off, (hi - lo) * sizeof(T));
            if (hi < Wo) std::memset(dst + hi, 0, (Wo - hi) * sizeof(T));
            continue;
          }
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const int64_t ix = ox * sw - pw + kx * dw;
            dst[ox] = (ix >= 0 && ix < W) ? s[ix] : T(0);
          }
        }
      }
    }
  }
}

// Adjoint of im2col: dx [N][C][H][W] = sum of the cols entries that read each input element. Each thread owns
// whole channels, so no two threads write the same element.
template <typename T>
static void col2im(const T* cols, T* dx, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t kh,
                   int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t Ho,
                   int64_t Wo, int nthreads) {
  const int64_t L = Ho * Wo, NL = N * L, Cg = C / G, K = Cg * kh * kw;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t n = 0; n < N; ++n) std::memset(dx + (n * C + c) * H * W, 0, H * W * sizeof(T));
    for (int64_t kk = 0; kk < kh * kw; ++kk) {
      const int64_t ky = kk / kw, kx = kk % kw;
      const T* row = cols + ((c / Cg) * K + (c % Cg) * kh * kw + kk) * NL;
      for (int64_t n = 0; n < N; ++n) {
        T* d = dx + (n * C + c) * H * W;
        for (int64_t oy = 0; oy < Ho; ++oy) {
          const int64_t iy = oy * sh - ph + ky * dh;
          if (iy < 0 || iy >= H) continue;
          const T* s = row + n * L + oy * Wo;
          T* drow = d + iy * W;
          if (sw == 1) {
            const int64_t off = kx * dw - pw;
            const int64_t lo = std::min<int64_t>(Wo, std::max<int64_t>(0, -off));
            const int64_t hi = std::max<int64_t>(lo, std::min<int64_t>(Wo, W - off));
            for (int64_t ox = lo; ox < hi; ++ox) drow[ox + off] += s[ox];
            continue;
          }
          for (int64_t ox = 0; ox < Wo; ++ox) {
            const int64_t ix = ox * sw - pw + kx * dw;
            if (ix >= 0 && ix < W) drow[ix] += s[ox];
          }
        }
      }
    }
  }
}

extern "C" {
int nsa_vector_bytes() { return NSA_VBYTES; }
void nsa_l1mm_f32(const float* W, const float* B, float* C, int64_t G, int64_t O, int64_t K, int64_t P, int nt) {
  l1mm<float>(W, B, C, G, O, K, P, nt);
}
void nsa_l1mm_f64(const double* W, const double* B, double* C, int64_t G, int64_t O, int64_t K, int64_t P, int nt) {
  l1mm<double>(W, B, C, G, O, K, P, nt);
}
void nsa_htmm_f32(const float* W, const float* B, const float* Gr, float* D, int64_t G, int64_t O, int64_t K,
                  int64_t P, int nt) {
  htmm<float>(W, B, Gr, D, G, O, K, P, nt);
}
void nsa_htmm_f64(const double* W, const double* B, const double* Gr, double* D, int64_t G, int64_t O, int64_t K,
                  int64_t P, int nt) {
  htmm<double>(W, B, Gr, D, G, O, K, P, nt);
}
void nsa_im2col_f32(const float* x, float* cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t kh,
                    int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t Ho,
                    int64_t Wo, int nt) {
  im2col<float>(x, cols, N, C, H, W, G, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, nt);
}
void nsa_im2col_f64(const double* x, double* cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t kh,
                    int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t Ho,
                    int64_t Wo, int nt) {
  im2col<double>(x, cols, N, C, H, W, G, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, nt);
}
void nsa_col2im_f32(const float* cols, float* dx, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t kh,
                    int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t Ho,
                    int64_t Wo, int nt) {
  col2im<float>(cols, dx, N, C, H, W, G, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, nt);
}
void nsa_col2im_f64(const double* cols, double* dx, int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t kh,
                    int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t Ho,
                    int64_t Wo, int nt) {
  col2im<double>(cols, dx, N, C, H, W, G, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, nt);
}
}
