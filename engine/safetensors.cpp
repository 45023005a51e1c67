// safetensors reader/writer. See safetensors.h; format notes in hybrid-models-and-kernels.md §7.
#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

namespace prfaas::engine {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeader = 100'000'000;

int64_t DTypeSize(const std::string& d) {
  static const std::map<std::string, int64_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(d);
  return it == kSizes.end() ? -1 : it->second;
}

std::string ShapeString(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

float Bf16ToFloat(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

std::vector<uint8_t> PackFloats(std::span<const float> values, const std::string& dtype) {
  std::vector<uint8_t> out;
  if (dtype == "BF16") {
    out.resize(values.size() * 2);
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t b = FloatToBf16(values[i]);
      std::memcpy(&out[i * 2], &b, 2);
    }
  } else {
    out.resize(values.size() * 4);
    std::memcpy(out.data(), values.data(), out.size());
  }
  return out;
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Internal("fstat " + path + " failed");
  }
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    return DataLoss(path + ": truncated (" + std::to_string(f->size_) + " bytes, need >= 8)");
  }
  void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return Internal("mmap " + path + " failed");
  f->map_ = static_cast<const uint8_t*>(m);

  uint64_t header_len = 0;
  std::memcpy(&header_len, f->map_, 8);  // little-endian hosts only (x86-64, aarch64)
  if (header_len > kMaxHeader)
    return DataLoss(path + ": header length " + std::to_string(header_len) + " exceeds 100 MB");
  if (8 + header_len > f->size_)
    return DataLoss(path + ": truncated header (" + std::to_string(header_len) +
                    " bytes declared, file is " + std::to_string(f->size_) + " bytes)");
  f->data_ = f->map_ + 8 + header_len;
  const uint64_t data_size = f->size_ - 8 - header_len;
  json h = json::parse(f->map_ + 8, f->map_ + 8 + header_len, nullptr, false);
  if (h.is_discarded() || !h.is_object())
    return DataLoss(path + ": header is not a valid JSON object");

  std::vector<std::pair<uint64_t, std::string>> order;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    const std::string where = path + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      return DataLoss(where + ": needs dtype, shape and data_offsets");
    TensorInfo t;
    try {
      t.dtype = v["dtype"].get<std::string>();
      t.shape = v["shape"].get<std::vector<int64_t>>();
      auto off = v["data_offsets"].get<std::vector<uint64_t>>();
      if (off.size() != 2) return DataLoss(where + ": data_offsets must have 2 entries");
      t.begin = off[0];
      t.end = off[1];
    } catch (const std::exception& e) {
      return DataLoss(where + ": malformed entry: " + e.what());
    }
    const int64_t es = DTypeSize(t.dtype);
    if (es < 0) return DataLoss(where + ": unknown dtype '" + t.dtype + "'");
    uint64_t n = static_cast<uint64_t>(es);
    for (int64_t d : t.shape) {
      if (d < 0) return DataLoss(where + ": negative dimension");
      if (d != 0 && n > UINT64_MAX / static_cast<uint64_t>(d))
        return DataLoss(where + ": shape overflows");
      n *= static_cast<uint64_t>(d);
    }
    if (t.end < t.begin || t.end - t.begin != n)
      return DataLoss(where + ": data_offsets [" + std::to_string(t.begin) + ", " +
                      std::to_string(t.end) + ") do not match shape " + ShapeString(t.shape) +
                      " x " + t.dtype + " = " + std::to_string(n) + " bytes");
    order.emplace_back(t.begin, name);
    f->tensors_.emplace(name, std::move(t));
  }
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    const auto& ta = f->tensors_.at(a.second);
    const auto& tb = f->tensors_.at(b.second);
    return ta.begin != tb.begin ? ta.begin < tb.begin : ta.end < tb.end;
  });
  uint64_t expect = 0;
  for (const auto& [begin, name] : order) {
    const TensorInfo& t = f->tensors_.at(name);
    if (t.begin < expect)
      return DataLoss(path + ": tensor '" + name + "' overlaps the previous tensor (begins at " +
                      std::to_string(t.begin) + ", previous ends at " + std::to_string(expect) +
                      ")");
    if (t.begin > expect)
      return DataLoss(path + ": gap before tensor '" + name + "' (begins at " +
                      std::to_string(t.begin) + ", expected " + std::to_string(expect) + ")");
    expect = t.end;
  }
  if (expect > data_size)
    return DataLoss(path + ": truncated: tensors need " + std::to_string(expect) +
                    " data bytes, file has " + std::to_string(data_size));
  if (expect < data_size)
    return DataLoss(path + ": " + std::to_string(data_size - expect) +
                    " trailing bytes after the last tensor");
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), size_);
}

Result<std::vector<float>> SafetensorsFile::ReadFloat32(const std::string& name,
                                                        const std::vector<int64_t>& shape) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFound(path_ + ": missing tensor '" + name + "'");
  const TensorInfo& t = it->second;
  if (t.shape != shape)
    return InvalidArgument(path_ + ": tensor '" + name + "' has shape " + ShapeString(t.shape) +
                           ", expected " + ShapeString(shape));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = data_ + t.begin;
  if (t.dtype == "F32") {
    std::memcpy(out.data(), p, n * 4);
  } else if (t.dtype == "BF16" || t.dtype == "F16") {
    const bool bf = t.dtype == "BF16";
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + i * 2, 2);
      out[i] = bf ? Bf16ToFloat(v) : F16ToFloat(v);
    }
  } else {
    return InvalidArgument(path_ + ": tensor '" + name + "' has dtype " + t.dtype +
                           "; weights must be F32, F16 or BF16");
  }
  return out;
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  json h = json::object();
  uint64_t off = 0;
  for (const auto& t : tensors) {
    h[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string header = h.dump();
  while (header.size() % 8 != 0) header.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Internal("cannot write " + path);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const auto& t : tensors)
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  if (!out) return Internal("write to " + path + " failed");
  return Status::Ok();
}

}  // namespace prfaas::engine
