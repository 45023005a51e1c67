#include "transport/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace prfaas::transport {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  constexpr Tables() {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1u) ? kPoly : 0u);
      t[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; ++b) {
      for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
    }
  }
};
constexpr Tables kTables;

}  // namespace

uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  const auto& t = kTables.t;
  uint32_t c = ~crc;
  while (size >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);  // little-endian host assumed (x86-64 / aarch64)
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
        t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return ~c;
}

#if defined(__x86_64__)
namespace {

// The crc32 instruction has a latency of 3 cycles but issues every cycle, so one dependency
// chain uses a third of it. Large inputs run three chains over three adjacent lanes of kLane
// bytes and join them: for the raw (uninverted) CRC register, crc(c, A||B) = Shift(crc(c, A))
// ^ crc(0, B), where Shift advances a register over kLane zero bytes. Shift is linear, so it is
// four 256-entry tables (one per register byte), built once with the instruction itself.
constexpr size_t kLane = 4096;

struct LaneShift {
  std::array<std::array<uint32_t, 256>, 4> t{};
  __attribute__((target("sse4.2"))) LaneShift() {
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v) {
        uint64_t c = v << (8 * k);
        for (size_t i = 0; i < kLane / 8; ++i) c = _mm_crc32_u64(c, 0);
        t[k][v] = static_cast<uint32_t>(c);
      }
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

}  // namespace

__attribute__((target("sse4.2"))) uint32_t Crc32cExtendSse42(uint32_t crc, const void* data,
                                                             size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t c = ~crc;
  while (size && (reinterpret_cast<uintptr_t>(p) & 7u)) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    --size;
  }
  if (size >= 3 * kLane) {
    static const LaneShift shift;
    while (size >= 3 * kLane) {
      uint64_t c1 = 0, c2 = 0;
      for (size_t i = 0; i < kLane; i += 8) {
        uint64_t a, b, d;
        std::memcpy(&a, p + i, 8);
        std::memcpy(&b, p + kLane + i, 8);
        std::memcpy(&d, p + 2 * kLane + i, 8);
        c = _mm_crc32_u64(c, a);
        c1 = _mm_crc32_u64(c1, b);
        c2 = _mm_crc32_u64(c2, d);
      }
      c = shift(shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1)) ^
          static_cast<uint32_t>(c2);
      p += 3 * kLane;
      size -= 3 * kLane;
    }
  }
  while (size >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    size -= 8;
  }
  while (size--) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return ~static_cast<uint32_t>(c);
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#else
uint32_t Crc32cExtendSse42(uint32_t crc, const void* data, size_t size) {
  return Crc32cExtendPortable(crc, data, size);
}
bool HasSse42() {
  return false;
}
#endif

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size) {
  return HasSse42() ? Crc32cExtendSse42(crc, data, size) : Crc32cExtendPortable(crc, data, size);
}

uint32_t Crc32c(const void* data, size_t size) {
  return Crc32cExtend(0, data, size);
}

namespace {

// GF(2) 32x32 matrices as 32 column vectors: the linear map "advance the CRC register over
// zero bits". For this CRC's pre/post inversion, Crc(A||B) = Zeros_{|B|}(Crc(A)) ^ Crc(B).
using Gf2Matrix = std::array<uint32_t, 32>;

uint32_t Times(const Gf2Matrix& m, uint32_t v) {
  uint32_t r = 0;
  for (int i = 0; v; ++i, v >>= 1)
    if (v & 1u) r ^= m[i];
  return r;
}

Gf2Matrix Square(const Gf2Matrix& m) {
  Gf2Matrix r;
  for (int i = 0; i < 32; ++i) r[i] = Times(m, m[i]);
  return r;
}

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  if (len_b == 0) return crc_a;
  Gf2Matrix op;  // one zero bit
  op[0] = kPoly;
  for (int i = 1; i < 32; ++i) op[i] = 1u << (i - 1);
  op = Square(Square(Square(op)));  // one zero byte
  // Apply op^(len_b) to crc_a by binary exponentiation.
  while (true) {
    if (len_b & 1u) crc_a = Times(op, crc_a);
    len_b >>= 1;
    if (len_b == 0) break;
    op = Square(op);
  }
  return crc_a ^ crc_b;
}

}  // namespace prfaas::transport
