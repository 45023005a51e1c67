// Tensor-core and async-copy helpers shared by the fast kernels (attention, Gated DeltaNet):
// cp.async 16-byte copies, ldmatrix (plain and transposed), mma.sync m16n8k16 bf16 -> fp32, and the
// swizzled shared-memory tile layout the ldmatrix addressing assumes. sm_80+ instructions, all
// available on sm_90. Fragment layouts (g = lane / 4, t = lane % 4), as in the PTX ISA:
//   A 16x16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8:  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8:  c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// so an accumulator tile pair (n8 tiles 2k, 2k+1) packed to bf16 is the A fragment of k-step k.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace prfaas::kernels::cuda {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; src_bytes = 0 zero-fills the destination (used for rows
// past the end, so that masked keys multiply finite zeros rather than stale shared memory).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b for one m16n8k16 tile, bf16 inputs, fp32 accumulators.
__device__ __forceinline__ void Mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The bf16 A fragment of k-step k from the fp32 accumulator tiles lo = n8 tile 2k and
// hi = n8 tile 2k + 1 (see the layouts above).
__device__ __forceinline__ void AccToA(uint32_t (&a)[4], const float (&lo)[4],
                                       const float (&hi)[4]) {
  a[0] = PackBf16(lo[0], lo[1]);
  a[1] = PackBf16(lo[2], lo[3]);
  a[2] = PackBf16(hi[0], hi[1]);
  a[3] = PackBf16(hi[2], hi[3]);
}

// Shared-memory tile of rows x HD bf16, 16-byte chunk c of row r stored at chunk c ^ (r & 7):
// the 8 rows one ldmatrix phase reads then fall into 8 different bank groups.
template <int HD>
__device__ __forceinline__ __nv_bfloat16* TileAt(__nv_bfloat16* base, int r, int chunk) {
  return base + r * HD + ((chunk ^ (r & 7)) << 3);
}

// ldmatrix addressing into such a tile for one lane. The lane reads row `row` (row & 7 = lane & 7
// for every fragment used here) at chunk 2 * kk + x for k-step kk; chunk = 8 * (kk / 4) + lo with
// lo = 2 * (kk % 4) + x, and the swizzle only permutes lo, so the byte address is
// row_base + 128 * (kk / 4) + off[kk % 4]: four lane-dependent offsets instead of one register per
// k-step (a fully unrolled loop would otherwise keep 16+ addresses live).
template <int HD>
struct FragAddr {
  uint32_t off[4];
  __device__ __forceinline__ FragAddr(const __nv_bfloat16* tile, int row, int x) {
    const uint32_t base = SmemAddr(tile) + row * HD * 2;
#pragma unroll
    for (int i = 0; i < 4; ++i) off[i] = base + ((((2 * i + x) ^ (row & 7))) << 4);
  }
  // Address of k-step kk (compile-time after unrolling), plus extra_rows whole rows.
  __device__ __forceinline__ uint32_t at(int kk, int extra_rows = 0) const {
    return off[kk & 3] + (kk >> 2) * 128 + extra_rows * HD * 2;
  }
};

}  // namespace prfaas::kernels::cuda
