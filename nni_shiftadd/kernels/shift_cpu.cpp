// CPU kernels of the shift (DeepShift) quantisers: one pass over the weight instead of a chain of tensor ops.
//
// pow2: q = sign(w) * 2^e, e = clamp(round(log2(clamp(|w|, 2^amin, 1))), pmin, pmax), computed on the bits:
//       round(log2 |w|) is the exponent, plus one when the mantissa is >= sqrt(2) - 1 (exact, as sqrt(2) is
//       irrational). Zeros and NaNs pass through unchanged.
// ps:   w = S * 2^P with P = clamp(round_half_even(shift), pmin, pmax), S = sign(sign) or 0 if |sign| < thr.
// ps_backward: d shift = g * w * ln 2, d sign = g * 2^P (straight-through estimator through both roundings).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

template <typename T> struct Bits;
template <> struct Bits<float> {
  typedef uint32_t U;
  static constexpr int MB = 23, BIAS = 127;
  static constexpr U SIGN = 0x80000000u, MANT = 0x7FFFFFu, INF = 0x7F800000u, ONE = 0x3F800000u;
  static constexpr U THR = 0x3504F4u;  // smallest mantissa with 1.m >= sqrt(2)
};
template <> struct Bits<double> {
  typedef uint64_t U;
  static constexpr int MB = 52, BIAS = 1023;
  static constexpr U SIGN = 0x8000000000000000ull, MANT = 0xFFFFFFFFFFFFFull, INF = 0x7FF0000000000000ull,
                     ONE = 0x3FF0000000000000ull;
  static constexpr U THR = 0x6A09E667F3BCDull;
};

template <typename T>
static void pow2(const T* w, T* q, int64_t n, int amin, int pmin, int pmax, int nthreads) {
  typedef Bits<T> B;
  typedef typename B::U U;
  const U lo_bits = U(amin + B::BIAS) << B::MB;
  const U emin = U(pmin + B::BIAS), emax = U(pmax + B::BIAS);
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    U b;
    std::memcpy(&b, w + i, sizeof(T));
    const U sign = b & B::SIGN, a = b & ~B::SIGN;
    U c = a < lo_bits ? lo_bits : a;
    c = c > B::ONE ? B::ONE : c;
    U e = (c >> B::MB) + ((c & B::MANT) >= B::THR ? 1 : 0);
    e = e < emin ? emin : (e > emax ? emax : e);
    U r = sign | (e << B::MB);
    r = (a == 0 || a > B::INF) ? b : r;
    std::memcpy(q + i, &r, sizeof(T));
  }
}

// round_half_even(p) clamped to [pmin, pmax], as an integer; written without libm calls so that it vectorises.
template <typename T> static inline int32_t round_exponent(T p, int pmin, int pmax) {
  p = std::min(std::max(p, T(pmin)), T(pmax));
  const T magic = T(1.5) * T(int64_t(1) << Bits<T>::MB);  // adding it rounds to an integer, ties to even
  return int32_t((p + magic) - magic);
}

template <typename T> static inline T exp2_int(int32_t e) {
  typename Bits<T>::U b = typename Bits<T>::U(e + Bits<T>::BIAS) << Bits<T>::MB;
  T r;
  std::memcpy(&r, &b, sizeof(T));
  return r;
}

template <typename T>
static void ps(const T* shift, const T* sign, T* w, int64_t n, int pmin, int pmax, T thr, int nthreads) {
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T p = shift[i], s = sign[i];
    const T mag = exp2_int<T>(round_exponent(p, pmin, pmax));
    // (p - p) and (s - s) are 0, or NaN for a NaN parameter, which must stay NaN
    w[i] = mag * (T(s >= thr) - T(s <= -thr)) + (p - p) + (s - s);
  }
}

template <typename T>
static void ps_backward(const T* shift, const T* w, const T* g, T* dshift, T* dsign, int64_t n, int pmin, int pmax,
                        int nthreads) {
  const T ln2 = T(0.693147180559945309417232121458176568);
  if (dshift && dsign) {  // one pass when both are wanted: the op is memory-bound
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T p = shift[i], gi = g[i];
      dshift[i] = gi * w[i] * ln2;
      dsign[i] = gi * exp2_int<T>(round_exponent(p, pmin, pmax)) + (p - p);
    }
  } else if (dshift) {
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < n; ++i) dshift[i] = g[i] * w[i] * ln2;
  } else if (dsign) {
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T p = shift[i];
      dsign[i] = g[i] * exp2_int<T>(round_exponent(p, pmin, pmax)) + (p - p);
    }
  }
}

extern "C" {
void nsa_pow2_f32(const float* w, float* q, int64_t n, int amin, int pmin, int pmax, int nt) {
  pow2<float>(w, q, n, amin, pmin, pmax, nt);
}
void nsa_pow2_f64(const double* w, double* q, int64_t n, int amin, int pmin, int pmax, int nt) {
  pow2<double>(w, q, n, amin, pmin, pmax, nt);
}
void nsa_ps_f32(const float* shift, const float* sign, float* w, int64_t n, int pmin, int pmax, float thr, int nt) {
  ps<float>(shift, sign, w, n, pmin, pmax, thr, nt);
}
void nsa_ps_f64(const double* shift, const double* sign, double* w, int64_t n, int pmin, int pmax, double thr,
                int nt) {
  ps<double>(shift, sign, w, n, pmin, pmax, thr, nt);
}
void nsa_ps_backward_f32(const float* shift, const float* w, const float* g, float* dshift, float* dsign, int64_t n,
                         int pmin, int pmax, int nt) {
  ps_backward<float>(shift, w, g, dshift, dsign, n, pmin, pmax, nt);
}
void nsa_ps_backward_f64(const double* shift, const double* w, const double* g, double* dshift, double* dsign,
                         int64_t n, int pmin, int pmax, int nt) {
  ps_backward<double>(shift, w, g, dshift, dsign, n, pmin, pmax, nt);
}
}
