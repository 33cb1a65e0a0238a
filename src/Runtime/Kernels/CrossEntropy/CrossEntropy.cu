#define NEG_INF __int_as_float(0xff800000)
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 == NEG_INF) return;
  if (m == NEG_INF) { m = m2; s = s2; return; }
  const float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

template <typename T>
__device__ void ce_fwd(const T* X, const long long* Tg, float* Nll, float* Lse, long long V) {
  __shared__ float sm[32], ss[32];
  const long long r = blockIdx.x;
  const T* x = X + r * V;
  float m = NEG_INF, s = 0.f;
  for (long long c = threadIdx.x; c < V; c += blockDim.x) {
    const float e = to_f(x[c]);
    if (e > m) { s = s * expf(m - e) + 1.f; m = e; } else { s += expf(e - m); }
  }
  for (int o = 16; o > 0; o >>= 1) lse_merge(m, s, __shfl_down_sync(0xffffffffu, m, o), __shfl_down_sync(0xffffffffu, s, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sm[warp] = m; ss[warp] = s; }
  __syncthreads();
  if (threadIdx.x == 0) {
    float mt = NEG_INF, st = 0.f;
    for (int i = 0; i < (int)(blockDim.x >> 5); ++i) lse_merge(mt, st, sm[i], ss[i]);
    const float l = mt + logf(st);
    const long long t = Tg[r];
    Lse[r] = l;
    Nll[r] = (t >= 0 && t < V) ? l - to_f(x[t]) : 0.f;
  }
}

template <typename T>
__device__ void ce_bwd(const T* X, const long long* Tg, const float* Lse, const float* dNll, T* dX, long long V) {
  const long long r = blockIdx.x;
  const long long t = Tg[r];
  const bool ignored = t < 0 || t >= V;
  const float l = Lse[r], d = dNll[r];
  for (long long c = threadIdx.x; c < V; c += blockDim.x) {
    const long long i = r * V + c;
    dX[i] = from_f<T>(ignored ? 0.f : (expf(to_f(X[i]) - l) - (c == t ? 1.f : 0.f)) * d);
  }
}

#define CE_KERNELS(T, S) \
  extern "C" __global__ void softmax_ce_fwd_##S(const T* X, const long long* Tg, float* Nll, float* Lse, long long V) { ce_fwd<T>(X, Tg, Nll, Lse, V); } \
  extern "C" __global__ void softmax_ce_bwd_##S(const T* X, const long long* Tg, const float* Lse, const float* dNll, T* dX, long long V) { ce_bwd<T>(X, Tg, Lse, dNll, dX, V); }
CE_KERNELS(bf16, bf16)
CE_KERNELS(f16, f16)
CE_KERNELS(float, f32)
