// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) used to checksum every KV segment.
//
// Crc32c() picks the SSE4.2 instruction path when the CPU has it (checked once at runtime) and a
// portable table-driven path otherwise; both give identical results. Extend() continues a running
// checksum so a segment can be checksummed in pieces: Crc32c(ab) == Extend(Crc32c(a), b).
#pragma once

#include <cstddef>
#include <cstdint>

namespace prfaas::transport {

uint32_t Crc32c(const void* data, size_t size);
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);
// CRC of A||B from crc_a = Crc32c(A), crc_b = Crc32c(B) and len_b = |B|, without the bytes.
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// Explicit paths, exposed so tests can check them against each other.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t size);
uint32_t Crc32cExtendSse42(uint32_t crc, const void* data, size_t size);  // requires HasSse42()
bool HasSse42();

}  // namespace prfaas::transport
