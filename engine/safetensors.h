// safetensors reader (mmap) and writer.
//
// SafetensorsFile::Open maps a file read-only and validates it fully before returning: header
// length sane, header is a JSON object, each tensor has a known dtype, a shape and data_offsets,
// byte sizes match shape x dtype, tensors tile the data buffer exactly (no gaps, no overlaps, no
// truncation). Errors are DATA_LOSS / INVALID_ARGUMENT statuses naming the tensor.
// ReadFloat32 converts F32 / F16 / BF16 tensors to float32 and checks the expected shape.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas::engine {

enum class DType { kF32, kF16, kBF16, kOther };

struct TensorInfo {
  std::string dtype;  // as written in the header, e.g. "BF16"
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets within the data buffer (after the header)
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static Result<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  // The tensor as float32; fails if missing, of another dtype family, or not of `shape`.
  Result<std::vector<float>> ReadFloat32(const std::string& name,
                                         const std::vector<int64_t>& shape) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data buffer
  std::map<std::string, TensorInfo> tensors_;
};

// One tensor to write: raw little-endian bytes of `dtype` ("F32", "BF16", "F16", ...).
struct TensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Writes a safetensors file (header padded with spaces to a multiple of 8).
Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

// float32 <-> bf16 (round to nearest even) / f16 helpers, exposed for tests and writers.
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t b);
float F16ToFloat(uint16_t h);
// Packs float values as F32 or BF16 bytes.
std::vector<uint8_t> PackFloats(std::span<const float> values, const std::string& dtype);

}  // namespace prfaas::engine
