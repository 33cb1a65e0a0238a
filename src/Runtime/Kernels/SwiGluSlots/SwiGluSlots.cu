struct bf16 { unsigned short x; };
struct f16 { unsigned short x; };
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __uint_as_float(((unsigned int)v.x) << 16); }
__device__ __forceinline__ float to_f(f16 v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x)); return f; }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) {
  unsigned int u = __float_as_uint(v);
  bf16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) { r.x = 0x7fc0; return r; }
  u += 0x7fffu + ((u >> 16) & 1u);
  r.x = (unsigned short)(u >> 16);
  return r;
}
template <> __device__ __forceinline__ f16 from_f<f16>(float v) { f16 r; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.x) : "f"(v)); return r; }

// two consecutive elements (index i even, F even): one 32-bit (16-bit types) or 64-bit (float) access
template <typename T> struct alignas(2 * sizeof(T)) Pair { T a, b; };
template <typename T> __device__ __forceinline__ float2 ld2(const T* p, long long i) {
  Pair<T> v = *reinterpret_cast<const Pair<T>*>(p + i);
  return make_float2(to_f(v.a), to_f(v.b));
}
template <typename T> __device__ __forceinline__ void st2(T* p, long long i, float a, float b) {
  Pair<T> v; v.a = from_f<T>(a); v.b = from_f<T>(b);
  *reinterpret_cast<Pair<T>*>(p + i) = v;
}
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// dropout of H: SwiGluSlotsOps.Keep (splitmix64 of seed, salt, element index; top 24 bits ≥ ratio)
struct Drop { unsigned long long seed, salt; float ratio, scale; };
__device__ __forceinline__ Drop make_drop(const long long* seed, float ratio, long long salt) {
  Drop d; d.ratio = ratio; d.salt = (unsigned long long)salt;
  d.seed = ratio > 0.f ? (unsigned long long)(*seed) : 0ull;
  d.scale = ratio > 0.f ? 1.0f / (1.0f - ratio) : 1.0f;
  return d;
}
__device__ __forceinline__ float drop(const Drop& d, long long i, float v) {
  if (d.ratio <= 0.f) return v;
  unsigned long long z = d.seed * 0x9E3779B97F4A7C15ull + d.salt * 0xD1B54A32D192ED03ull + (unsigned long long)i;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (1.0f / 16777216.0f) >= d.ratio ? v * d.scale : 0.f;
}

template <typename T>
__device__ void fwd(const T* G, const T* U, const T* DG, const T* DU, const float* W, T* H, T* M, int K, long long F, Drop dr) {
  const long long n = blockIdx.x;
  float w[8];
  for (int j = 0; j < K; ++j) w[j] = W[n * K + j];
  const bool pairs = (F & 1) == 0;
  const long long step = pairs ? 2 : 1;
  for (long long c = threadIdx.x * step; c < F; c += blockDim.x * step) {
    const long long nf = n * F + c;
    float2 g0, u0;
    if (pairs) { g0 = ld2(G, nf); u0 = ld2(U, nf); } else { g0 = make_float2(to_f(G[nf]), 0.f); u0 = make_float2(to_f(U[nf]), 0.f); }
    float ma = 0.f, mb = 0.f;
    for (int j = 0; j < K; ++j) {
      const long long i = (n * K + j) * F + c;
      float2 dg, du;
      if (pairs) { dg = ld2(DG, i); du = ld2(DU, i); } else { dg = make_float2(to_f(DG[i]), 0.f); du = make_float2(to_f(DU[i]), 0.f); }
      const float ga = g0.x + dg.x, gb = g0.y + dg.y;
      const float ha = ga * sigmoid(ga) * (u0.x + du.x), hb = gb * sigmoid(gb) * (u0.y + du.y);
      if (pairs) st2(H, i, drop(dr, i, ha), drop(dr, i + 1, hb)); else H[i] = from_f<T>(drop(dr, i, ha));
      ma += w[j] * ha; mb += w[j] * hb;
    }
    if (pairs) st2(M, nf, ma, mb); else M[nf] = from_f<T>(ma);
  }
}

__device__ __forceinline__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float t = 0.f;
  if (threadIdx.x == 0) for (int i = 0; i < (int)(blockDim.x >> 5); ++i) t += shared[i];
  return t;
}

template <typename T>
__device__ void bwd(const T* G, const T* U, const T* DG, const T* DU, const float* W, const T* dM, const T* dH,
                    T* dDG, T* dDU, T* dGs, T* dUs, float* dW, int K, long long F, Drop dr) {
  __shared__ float shared[32];
  const long long n = blockIdx.x;
  float w[8], acc[8];
  for (int j = 0; j < K; ++j) { w[j] = W[n * K + j]; acc[j] = 0.f; }
  const bool pairs = (F & 1) == 0;
  const long long step = pairs ? 2 : 1;
  for (long long c = threadIdx.x * step; c < F; c += blockDim.x * step) {
    const long long nf = n * F + c;
    float2 g0, u0, dm = make_float2(0.f, 0.f);
    if (pairs) { g0 = ld2(G, nf); u0 = ld2(U, nf); if (dM) dm = ld2(dM, nf); }
    else { g0 = make_float2(to_f(G[nf]), 0.f); u0 = make_float2(to_f(U[nf]), 0.f); if (dM) dm.x = to_f(dM[nf]); }
    float sga = 0.f, sgb = 0.f, sua = 0.f, sub = 0.f;
    for (int j = 0; j < K; ++j) {
      const long long i = (n * K + j) * F + c;
      float2 dg, du, dh = make_float2(0.f, 0.f);
      if (pairs) { dg = ld2(DG, i); du = ld2(DU, i); if (dH) { dh = ld2(dH, i); dh.x = drop(dr, i, dh.x); dh.y = drop(dr, i + 1, dh.y); } }
      else { dg = make_float2(to_f(DG[i]), 0.f); du = make_float2(to_f(DU[i]), 0.f); if (dH) dh.x = drop(dr, i, to_f(dH[i])); }
      const float ga = g0.x + dg.x, gb = g0.y + dg.y, ua = u0.x + du.x, ub = u0.y + du.y;
      const float sa = sigmoid(ga), sb = sigmoid(gb), aa = ga * sa, ab = gb * sb;
      acc[j] += dm.x * aa * ua + (pairs ? dm.y * ab * ub : 0.f);
      const float da = w[j] * dm.x + dh.x, db = w[j] * dm.y + dh.y;
      const float gga = da * ua * sa * (1.f + ga * (1.f - sa)), ggb = db * ub * sb * (1.f + gb * (1.f - sb));
      const float uua = da * aa, uub = db * ab;
      if (pairs) { st2(dDG, i, gga, ggb); st2(dDU, i, uua, uub); }
      else { dDG[i] = from_f<T>(gga); dDU[i] = from_f<T>(uua); }
      sga += gga; sgb += ggb; sua += uua; sub += uub;
    }
    if (pairs) { st2(dGs, nf, sga, sgb); st2(dUs, nf, sua, sub); }
    else { dGs[nf] = from_f<T>(sga); dUs[nf] = from_f<T>(sua); }
  }
  for (int j = 0; j < K; ++j) {
    const float t = block_sum(acc[j], shared);
    if (threadIdx.x == 0) dW[n * K + j] = t;
  }
}

#define KERNELS(T, S) \
  extern "C" __global__ void swiglu_slots_fwd_##S(const T* G, const T* U, const T* DG, const T* DU, const float* W, T* H, T* M, int K, long long F, \
                                                   const long long* seed, float ratio, long long salt) \
  { fwd<T>(G, U, DG, DU, W, H, M, K, F, make_drop(seed, ratio, salt)); } \
  extern "C" __global__ void swiglu_slots_bwd_##S(const T* G, const T* U, const T* DG, const T* DU, const float* W, const T* dM, const T* dH, \
                                                   T* dDG, T* dDU, T* dGs, T* dUs, float* dW, int K, long long F, \
                                                   const long long* seed, float ratio, long long salt) \
  { bwd<T>(G, U, DG, DU, W, dM, dH, dDG, dDU, dGs, dUs, dW, K, F, make_drop(seed, ratio, salt)); }
KERNELS(bf16, bf16)
KERNELS(f16, f16)
KERNELS(float, f32)
