// CPU kernels of the heterogeneous-weight-sharing regulariser (paper eq. (5), with T of eq. (6) inside): the KL
// terms of a layer's weight pools and their closed-form gradients, in two passes over the pools instead of a few
// dozen small tensor operations per layer.
//
// The P pools are concatenated in w (pool p has len[p] elements). For pool p, with n = len[p]:
//   Gaussian term  mu = mean(w), v = mean((w - mu)^2) (floored at 1e-12),  KL = (v + mu^2 - 1 - log v) / 2
//   Laplace term   (only with alpha) u = w * alpha[p * segments + idx], m = mean(u), b = mean|u - m| (floored),
//                  KL = log(scale / b) + |m| / scale + (b / scale) exp(-|m| / b) - 1
// kl_forward writes the summed KL to *out and six statistics per pool to stats (mu, v, whether v was above the
// floor, m, b, whether b was) for kl_backward, which writes d(grad * KL)/dw to gw and adds d(grad * KL)/dalpha
// into galpha (zeroed by the caller).
// Sums are accumulated in double.
//
// spacing_kl is the shape-aware estimator of the same two terms (the default, hws.py's spacing_kl):
//   KL(P_x || q) = mean(-log q(x)) - H(x),  H = mean_i log(n (x_(hi_i) - x_(lo_i)) / (hi_i - lo_i))
// with x_(i) the order statistics, hi_i = min(i + m, n - 1), lo_i = max(i - m, 0), m = round(sqrt(n)) (Vasicek's
// m-spacing entropy with Ebrahimi's boundary correction), q = N(0, 1) for x = w and Laplace(0, scale) for
// x = w * alpha[p * segments + idx] (x = w without alpha). It writes the value and its gradient (gx per sample, galpha added into the
// caller-zeroed [P, segments]) in one call, pools in parallel: each sorts its sample once per term.
//
// rank_segments is the run of T each weight falls in (eq. (6)): with the n weights sorted in descending order, the
// element of rank r is in run r * segments / n.
// Both sort at every forward pass of a layer, so they sort by radix (O(n)) rather than by comparison.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

template <typename T>
static void kl_forward(const T* w, int64_t P, const int64_t* len, const T* alpha, const int64_t* idx,
                       int64_t segments, double scale, double* stats, double* out) {
  double total = 0.0;
  int64_t off = 0;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t n = len[p];
    const T* x = w + off;
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    const double mu = s / double(n);
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double c = double(x[i]) - mu;
      ss += c * c;
    }
    const double v_raw = ss / double(n);
    const double v = v_raw > 1e-12 ? v_raw : 1e-12;
    total += 0.5 * (v + mu * mu - 1.0 - std::log(v));
    double* st = stats + 6 * p;
    st[0] = mu;
    st[1] = v;
    st[2] = v_raw > 1e-12 ? 1.0 : 0.0;
    if (alpha != nullptr) {
      const T* a = alpha + p * segments;
      const int64_t* k = idx + off;
      double su = 0.0;
      for (int64_t i = 0; i < n; ++i) su += double(x[i] * a[k[i]]);
      const double m = su / double(n);
      double sd = 0.0;
      for (int64_t i = 0; i < n; ++i) sd += std::fabs(double(x[i] * a[k[i]]) - m);
      const double b_raw = sd / double(n);
      const double b = b_raw > 1e-12 ? b_raw : 1e-12;
      const double am = std::fabs(m);
      total += std::log(scale / b) + am / scale + (b / scale) * std::exp(-am / b) - 1.0;
      st[3] = m;
      st[4] = b;
      st[5] = b_raw > 1e-12 ? 1.0 : 0.0;
    }
    off += n;
  }
  *out = total;
}

template <typename T>
static void kl_backward(const T* w, int64_t P, const int64_t* len, const T* alpha, const int64_t* idx,
                        int64_t segments, double scale, const double* stats, double grad, T* gw, T* galpha) {
  int64_t off = 0;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t n = len[p];
    const T* x = w + off;
    T* gx = gw + off;
    const double* st = stats + 6 * p;
    const double g = grad / double(n), mu = st[0], v = st[1];
    const double coef = st[2] != 0.0 ? g * (1.0 - 1.0 / v) : 0.0, shift = g * mu;
    if (alpha == nullptr) {
      for (int64_t i = 0; i < n; ++i) gx[i] = T(coef * (double(x[i]) - mu) + shift);
    } else {
      const T* a = alpha + p * segments;
      T* ga = galpha + p * segments;
      const int64_t* k = idx + off;
      const double m = st[3], b = st[4], am = std::fabs(m), e = std::exp(-am / b);
      const double d_b = st[5] != 0.0 ? g * (-1.0 / b + (e / scale) * (1.0 + am / b)) : 0.0;
      const double d_m = g * ((m > 0.0) - (m < 0.0)) / scale * (1.0 - e);
      double sgn_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = double(x[i] * a[k[i]]) - m;
        sgn_sum += (d > 0.0) - (d < 0.0);
      }
      const double sgn_mean = sgn_sum / double(n);
      for (int64_t i = 0; i < n; ++i) {
        const double ai = a[k[i]], d = double(x[i] * a[k[i]]) - m;
        const double gu = d_b * (((d > 0.0) - (d < 0.0)) - sgn_mean) + d_m;
        gx[i] = T(coef * (double(x[i]) - mu) + shift + gu * ai);
        ga[k[i]] += T(gu * double(x[i]));
      }
    }
    off += n;
  }
}

// The unsigned key of a float whose unsigned order is the float's order (-0.0 before +0.0), and its complement for
// the descending order.
static inline uint32_t order_key(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static inline uint64_t order_key(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// order[0..n) := the indices of x sorted by value (descending when asked), equal keys in index order (+0.0 and -0.0
// are different keys): a least-significant-digit radix sort of the keys, 11 bits a pass, passes whose digit every
// key shares skipped; below kRadixMin elements a comparison sort of the same keys (the histograms would dominate).
constexpr int64_t kRadixMin = 1024;

template <typename T>
static void radix_order(const T* x, int64_t n, bool descending, int32_t* order) {
  using Key = decltype(order_key(T()));
  constexpr int kBits = 11, kPasses = (int(sizeof(Key)) * 8 + kBits - 1) / kBits;
  constexpr Key kMask = (Key(1) << kBits) - 1;
  std::vector<Key> key(n), key_tmp(n);
  std::vector<int32_t> idx(n), idx_tmp(n);
  for (int64_t i = 0; i < n; ++i) key[i] = descending ? Key(~order_key(x[i])) : order_key(x[i]);
  std::iota(idx.begin(), idx.end(), 0);
  if (n < kRadixMin) {
    std::stable_sort(idx.begin(), idx.end(), [&key](int32_t a, int32_t b) { return key[a] < key[b]; });
    std::copy(idx.begin(), idx.end(), order);
    return;
  }
  std::vector<int64_t> count(std::size_t(1) << kBits);
  for (int pass = 0; pass < kPasses && n > 0; ++pass) {
    const int shift = pass * kBits;
    std::fill(count.begin(), count.end(), 0);
    for (int64_t i = 0; i < n; ++i) ++count[(key[i] >> shift) & kMask];
    if (count[(key[0] >> shift) & kMask] == n) continue;
    int64_t sum = 0;
    for (auto& c : count) {
      const int64_t c0 = c;
      c = sum;
      sum += c0;
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t dst = count[(key[i] >> shift) & kMask]++;
      key_tmp[dst] = key[i];
      idx_tmp[dst] = idx[i];
    }
    key.swap(key_tmp);
    idx.swap(idx_tmp);
  }
  std::copy(idx.begin(), idx.end(), order);
}

template <typename T>
static void rank_segments(const T* w, int64_t n, int64_t segments, int64_t* out) {
  std::vector<int32_t> order(n);
  radix_order(w, n, true, order.data());
  for (int64_t r = 0; r < n; ++r) out[order[r]] = r * segments / n;
}

// KL of the sample x[0..n) against q and d KL / d x[i] into g (overwritten); order is scratch of size n.
static double spacing_term(const double* x, int64_t n, bool laplace, double scale, std::vector<int32_t>& order,
                           double* g) {
  if (n < 4) {
    std::fill(g, g + n, 0.0);
    return 0.0;
  }
  const int64_t m = std::max<int64_t>(1, std::min<int64_t>(n / 2, std::llround(std::sqrt(double(n)))));
  radix_order(x, n, false, order.data());
  double cross = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (laplace) {
      cross += std::fabs(x[i]);
      g[i] = double((x[i] > 0.0) - (x[i] < 0.0)) / (scale * double(n));
    } else {
      cross += x[i] * x[i];
      g[i] = x[i] / double(n);
    }
  }
  cross = laplace ? std::log(2.0 * scale) + cross / (double(n) * scale)
                  : 0.5 * std::log(2.0 * M_PI) + 0.5 * cross / double(n);
  double entropy = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t hi = std::min(i + m, n - 1), lo = std::max<int64_t>(i - m, 0);
    const double raw = x[order[hi]] - x[order[lo]];
    const double spread = raw > 1e-12 ? raw : 1e-12;
    entropy += std::log(spread * double(n) / double(hi - lo));
    if (raw > 1e-12) {  // the gradient of -H: the spacing's two ends
      const double inv = 1.0 / (double(n) * spread);
      g[order[hi]] -= inv;
      g[order[lo]] += inv;
    }
  }
  return cross - entropy / double(n);
}

// P samples concatenated in x (sample p has len[p] elements): the Gaussian term when gaussian, the Laplace term
// when laplace; with alpha, idx gives each element's run of T (without, T is the identity and galpha unused).
template <typename T>
static void spacing_kl(const T* x, int64_t P, const int64_t* len, const T* alpha, const int64_t* idx,
                       int64_t segments, double scale, int gaussian, int laplace, int threads, double* kl, T* gx,
                       T* galpha) {
  std::vector<int64_t> off(P + 1, 0);
  for (int64_t p = 0; p < P; ++p) off[p + 1] = off[p] + len[p];
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t p = 0; p < P; ++p) {
    const int64_t n = len[p], o = off[p];
    std::vector<double> v(n), g(n), acc(n, 0.0);
    std::vector<int32_t> order(n);
    double total = 0.0;
    if (gaussian) {
      for (int64_t i = 0; i < n; ++i) v[i] = double(x[o + i]);
      total += spacing_term(v.data(), n, false, scale, order, g.data());
      for (int64_t i = 0; i < n; ++i) acc[i] = g[i];
    }
    if (laplace) {
      const T* a = alpha != nullptr ? alpha + p * segments : nullptr;
      const int64_t* k = idx != nullptr ? idx + o : nullptr;
      for (int64_t i = 0; i < n; ++i) v[i] = double(x[o + i]) * (a != nullptr ? double(a[k[i]]) : 1.0);
      total += spacing_term(v.data(), n, true, scale, order, g.data());
      T* ga = a != nullptr ? galpha + p * segments : nullptr;
      for (int64_t i = 0; i < n; ++i) {
        acc[i] += g[i] * (a != nullptr ? double(a[k[i]]) : 1.0);
        if (ga != nullptr) ga[k[i]] += T(g[i] * double(x[o + i]));
      }
    }
    for (int64_t i = 0; i < n; ++i) gx[o + i] = T(acc[i]);
    kl[p] = total;
  }
}

#define NSA_HWS(T, S)                                                                                         \
  extern "C" void nsa_kl_forward_##S(const T* w, int64_t P, const int64_t* len, const T* alpha,              \
                                     const int64_t* idx, int64_t segments, double scale, double* stats,      \
                                     double* out) {                                                          \
    kl_forward<T>(w, P, len, alpha, idx, segments, scale, stats, out);                                       \
  }                                                                                                           \
  extern "C" void nsa_kl_backward_##S(const T* w, int64_t P, const int64_t* len, const T* alpha,             \
                                      const int64_t* idx, int64_t segments, double scale, const double* stats, \
                                      double grad, T* gw, T* galpha) {                                       \
    kl_backward<T>(w, P, len, alpha, idx, segments, scale, stats, grad, gw, galpha);                         \
  }                                                                                                           \
  extern "C" void nsa_spacing_kl_##S(const T* x, int64_t P, const int64_t* len, const T* alpha,              \
                                     const int64_t* idx, int64_t segments, double scale, int gaussian,       \
                                     int laplace, int threads, double* kl, T* gx, T* galpha) {               \
    spacing_kl<T>(x, P, len, alpha, idx, segments, scale, gaussian, laplace, threads, kl, gx, galpha);       \
  }                                                                                                           \
  extern "C" void nsa_rank_segments_##S(const T* w, int64_t n, int64_t segments, int64_t* out) {             \
    rank_segments<T>(w, n, segments, out);                                                                    \
  }

NSA_HWS(float, f32)
NSA_HWS(double, f64)
