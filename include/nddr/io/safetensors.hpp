#pragma once
/// \file
/// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
/// an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON mapping tensor names to
/// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the first byte after
/// the header) plus an optional "__metadata__" string map, then the little-endian, row-major
/// tensor data.
///
/// Every failure throws `nddr::IoError` naming the file, the tensor or field, and what was
/// expected.
///
/// Example:
///   auto f = nddr::io::SafetensorsFile::read("ref.safetensors");
///   nddr::Tensor<double> x = f.tensor<double>("case0.x");   // any numeric dtype, rank <= 4
///   std::vector<float> y = f.values<float>("case0.y");     // flat, converted
///   nddr::io::write_safetensors("out.safetensors", {nddr::io::entry("x", x.cview())});

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/json.hpp"

namespace nddr::io {

/// Element types of a safetensors file that nddr reads and writes.
enum class Dtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

/// The dtype's name in a safetensors header: "F64", "F32", "F16", "BF16", "I64", ... "BOOL".
inline const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::kF64:
      return "F64";
    case Dtype::kF32:
      return "F32";
    case Dtype::kF16:
      return "F16";
    case Dtype::kBF16:
      return "BF16";
    case Dtype::kI64:
      return "I64";
    case Dtype::kI32:
      return "I32";
    case Dtype::kI16:
      return "I16";
    case Dtype::kI8:
      return "I8";
    case Dtype::kU8:
      return "U8";
    case Dtype::kBool:
      return "BOOL";
  }
  return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(Dtype d) {
  switch (d) {
    case Dtype::kF64:
    case Dtype::kI64:
      return 8;
    case Dtype::kF32:
    case Dtype::kI32:
      return 4;
    case Dtype::kF16:
    case Dtype::kBF16:
    case Dtype::kI16:
      return 2;
    case Dtype::kI8:
    case Dtype::kU8:
    case Dtype::kBool:
      return 1;
  }
  return 0;
}

/// The dtype called `name` in a header, or nullopt for a dtype nddr does not support.
inline std::optional<Dtype> dtype_from_name(std::string_view name) {
  for (Dtype d : {Dtype::kF64, Dtype::kF32, Dtype::kF16, Dtype::kBF16, Dtype::kI64, Dtype::kI32,
                  Dtype::kI16, Dtype::kI8, Dtype::kU8, Dtype::kBool})
    if (name == dtype_name(d)) return d;
  return std::nullopt;
}

/// The dtype that stores C++ type `T` without conversion.
template <class T>
constexpr Dtype dtype_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, double>)
    return Dtype::kF64;
  else if constexpr (std::is_same_v<U, float>)
    return Dtype::kF32;
  else if constexpr (std::is_same_v<U, bool>)
    return Dtype::kBool;
  else if constexpr (std::is_same_v<U, std::int64_t>)
    return Dtype::kI64;
  else if constexpr (std::is_same_v<U, std::int32_t>)
    return Dtype::kI32;
  else if constexpr (std::is_same_v<U, std::int16_t>)
    return Dtype::kI16;
  else if constexpr (std::is_same_v<U, std::int8_t>)
    return Dtype::kI8;
  else if constexpr (std::is_same_v<U, std::uint8_t>)
    return Dtype::kU8;
  else
    static_assert(std::is_same_v<U, double>,
                  "nddr::io::dtype_of: T must be double, float, bool, std::int64_t, "
                  "std::int32_t, std::int16_t, std::int8_t or std::uint8_t");
}

namespace detail {

/// Headers above this size are rejected as corrupt rather than allocated.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

template <class... Args>
[[noreturn]] void io_fail(const std::string& path, Args&&... args) {
  throw IoError(
      nddr::detail::concat("nddr::io::safetensors: '", path, "': ", std::forward<Args>(args)...));
}

// Little-endian loads independent of the host byte order and of alignment.
template <class U>
U load_le_bits(const unsigned char* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
  return v;
}

template <class U>
void store_le_bits(unsigned char* p, U v) {
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// IEEE binary16 -> double, exact for every input (subnormals, infinities, NaN).
inline double half_to_double(std::uint16_t h) {
  const double sign = (h & 0x8000u) ? -1.0 : 1.0;
  const int exponent = (h >> 10) & 0x1F;
  const int mantissa = h & 0x3FF;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31)
    return mantissa ? std::numeric_limits<double>::quiet_NaN()
                    : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(mantissa + 1024, exponent - 25);
}

// bfloat16 is the upper half of a binary32.
inline float bf16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

inline bool is_floating(Dtype d) {
  return d == Dtype::kF64 || d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16;
}

// Element i of a little-endian buffer of dtype d, converted to T.
template <class T>
T load_element(Dtype d, const unsigned char* base, std::size_t i) {
  const unsigned char* p = base + i * dtype_size(d);
  switch (d) {
    case Dtype::kF64:
      return static_cast<T>(std::bit_cast<double>(load_le_bits<std::uint64_t>(p)));
    case Dtype::kF32:
      return static_cast<T>(std::bit_cast<float>(load_le_bits<std::uint32_t>(p)));
    case Dtype::kF16:
      return static_cast<T>(half_to_double(load_le_bits<std::uint16_t>(p)));
    case Dtype::kBF16:
      return static_cast<T>(bf16_to_float(load_le_bits<std::uint16_t>(p)));
    case Dtype::kI64:
      return static_cast<T>(std::bit_cast<std::int64_t>(load_le_bits<std::uint64_t>(p)));
    case Dtype::kI32:
      return static_cast<T>(std::bit_cast<std::int32_t>(load_le_bits<std::uint32_t>(p)));
    case Dtype::kI16:
      return static_cast<T>(std::bit_cast<std::int16_t>(load_le_bits<std::uint16_t>(p)));
    case Dtype::kI8:
      return static_cast<T>(static_cast<std::int8_t>(*p));
    case Dtype::kU8:
      return static_cast<T>(*p);
    case Dtype::kBool:
      return static_cast<T>(*p != 0 ? 1 : 0);
  }
  return T{};
}

// Element count of `shape`, or nullopt when it overflows int64.
inline std::optional<std::int64_t> checked_numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t e : shape) {
    if (e != 0 && n > std::numeric_limits<std::int64_t>::max() / e) return std::nullopt;
    n *= e;
  }
  return n;
}

// "(2, 3)"; a hostile rank-1000000 shape prints its first 8 extents and its rank.
inline std::string shape_str(const std::vector<std::int64_t>& shape) {
  constexpr std::size_t kShown = 8;
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size() && i < kShown; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() > kShown) s += ", ... [rank " + std::to_string(shape.size()) + "]";
  return s + ")";
}

}  // namespace detail

/// A safetensors file read into memory and validated.
///
/// `read` checks the 8-byte header length and the header before reading any tensor data, and
/// reads only the data section, which every tensor's extent must lie in. Refused (IoError
/// naming the file, the tensor or field, and what was expected): anything but a regular file
/// (FIFOs and devices fail at once, without blocking), a header over 100 MB, longer than the
/// file, not starting with '{', not valid UTF-8 JSON or not an object; a tensor with an unknown
/// dtype, a negative or overflowing extent, data offsets that do not match its shape and
/// dtype or reach past the file; tensor byte ranges that overlap or leave a gap, and data
/// bytes no tensor covers (the format requires the data section to be fully indexed); a data
/// section larger than this machine's physical memory.
///
/// Lookups by an unknown name throw IoError listing some of the available names. Values are
/// converted on access from any dtype (F16 and BF16 decoded, BOOL as 0/1) to the requested
/// arithmetic type with `static_cast` semantics.
class SafetensorsFile {
 public:
  /// Reads and validates `path` (see the class comment for what is refused).
  static SafetensorsFile read(const std::string& path) {
    SafetensorsFile f;
    f.path_ = path;
    RegularFile file = open_regular_file("nddr::io::safetensors", path);
    const std::uint64_t data_bytes = f.read_header(file);
    const std::uint64_t memory = physical_memory_bytes();
    if (memory != 0 && data_bytes > memory)
      detail::io_fail(path, "the data section is ", data_bytes,
                      " bytes, more than this machine's memory (", memory, " bytes)");
    f.bytes_.resize(static_cast<std::size_t>(data_bytes));
    read_exact_at("nddr::io::safetensors", path, file.fd.get(), file.size - data_bytes,
                  f.bytes_.data(), f.bytes_.size());
    return f;
  }

  /// Whether a tensor called `name` exists (`__metadata__` is not a tensor).
  bool contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }

  /// Extents of tensor `name` (empty for a scalar).
  const std::vector<std::int64_t>& shape(std::string_view name) const { return at(name).shape; }

  /// Stored element type of tensor `name`.
  Dtype dtype(std::string_view name) const { return at(name).dtype; }

  /// Elements of tensor `name`, row-major, converted to `T`. Conversion to an integer type
  /// truncates toward zero and throws IoError for an element outside the range of `T` (NaN and
  /// infinities included); conversion to a floating type rounds.
  template <class T>
  std::vector<T> values(std::string_view name) const {
    static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                  "nddr::io::SafetensorsFile::values: T must be an arithmetic type other than "
                  "bool (BOOL tensors read as 0/1 into any integer or floating type)");
    const Entry& e = at(name);
    const unsigned char* base = bytes_.data() + e.begin;
    std::vector<T> out(static_cast<std::size_t>(e.numel));
    if constexpr (std::is_floating_point_v<T>) {
      for (std::size_t i = 0; i < out.size(); ++i)
        out[i] = detail::load_element<T>(e.dtype, base, i);
    } else if (detail::is_floating(e.dtype)) {
      // Exact bounds: -2^digits (signed) or 0 and 2^digits are representable doubles.
      const double hi = std::ldexp(1.0, std::numeric_limits<T>::digits);
      const double lo = std::is_signed_v<T> ? -hi : 0.0;
      for (std::size_t i = 0; i < out.size(); ++i) {
        const double d = std::trunc(detail::load_element<double>(e.dtype, base, i));
        if (!(d >= lo && d < hi)) out_of_range<T>(e, name, i, std::to_string(d));
        out[i] = static_cast<T>(d);
      }
    } else {
      for (std::size_t i = 0; i < out.size(); ++i) {
        const auto v = detail::load_element<std::int64_t>(e.dtype, base, i);
        if (!std::in_range<T>(v)) out_of_range<T>(e, name, i, std::to_string(v));
        out[i] = static_cast<T>(v);
      }
    }
    return out;
  }

  /// Tensor `name` (rank 0 to 4) as an owning CPU tensor of `T`.
  template <class T>
  Tensor<T, Cpu> tensor(std::string_view name) const {
    const Entry& e = at(name);
    if (e.shape.size() > static_cast<std::size_t>(Shape::kMaxRank))
      detail::io_fail(path_, "tensor '", name, "' has shape ", detail::shape_str(e.shape),
                      " of rank ", e.shape.size(), ", expected rank 0 to ", Shape::kMaxRank,
                      " for nddr::Tensor (use values<T>() for the flat data)");
    const std::vector<T> v = values<T>(name);
    Tensor<T, Cpu> t(to_shape(e.shape));
    std::copy(v.begin(), v.end(), t.data());
    return t;
  }

  /// The header's "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The path the file was read from.
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    Dtype dtype = Dtype::kF32;
    std::vector<std::int64_t> shape;
    std::int64_t numel = 0;
    std::uint64_t begin = 0;  // relative to the data section
    std::uint64_t end = 0;
  };

  const Entry& at(std::string_view name) const {
    const auto it = entries_.find(name);
    if (it != entries_.end()) return it->second;
    constexpr std::size_t kShown = 8;
    std::string avail;
    std::size_t shown = 0;
    for (const auto& kv : entries_) {
      if (shown == kShown) {
        avail += ", ...";
        break;
      }
      avail += (shown++ ? ", '" : "'") + excerpt(kv.first) + "'";
    }
    detail::io_fail(path_, "no tensor named '", name, "'; the file has ", entries_.size(),
                    " tensors", entries_.empty() ? std::string() : ": " + avail);
  }

  template <class T>
  [[noreturn]] void out_of_range(const Entry& e, std::string_view name, std::size_t i,
                                 const std::string& value) const {
    detail::io_fail(path_, "tensor '", name, "' (", dtype_name(e.dtype), ") element ", i,
                    " has value ", value, ", outside the range [", +std::numeric_limits<T>::min(),
                    ", ", +std::numeric_limits<T>::max(), "] of the requested integer type");
  }

  static Shape to_shape(const std::vector<std::int64_t>& s) {
    switch (s.size()) {
      case 0:
        return Shape{};
      case 1:
        return Shape{s[0]};
      case 2:
        return Shape{s[0], s[1]};
      case 3:
        return Shape{s[0], s[1], s[2]};
      default:
        return Shape{s[0], s[1], s[2], s[3]};
    }
  }

  // Reads and checks the length field and the header; returns the size of the data section,
  // which every tensor's extent has been checked against.
  std::uint64_t read_header(const RegularFile& file) {
    if (file.size < 8)
      detail::io_fail(path_, "file has ", file.size,
                      " bytes, expected at least 8 (the u64 header length)");
    unsigned char length[8];
    read_exact_at("nddr::io::safetensors", path_, file.fd.get(), 0, length, 8);
    const std::uint64_t n = detail::load_le_bits<std::uint64_t>(length);
    if (n > detail::kMaxHeaderBytes)
      detail::io_fail(path_, "header length ", n, " exceeds the limit of ", detail::kMaxHeaderBytes,
                      " bytes (corrupt or not a safetensors file)");
    if (n > file.size - 8)
      detail::io_fail(path_, "header length ", n, " is larger than the ", file.size - 8,
                      " bytes after the length field");
    std::string text(static_cast<std::size_t>(n), '\0');
    read_exact_at("nddr::io::safetensors", path_, file.fd.get(), 8, text.data(), text.size());
    if (text.empty() || text[0] != '{')
      detail::io_fail(path_, "header must start with '{' (a JSON object), got ",
                      text.empty() ? std::string("an empty header")
                                   : "'" + excerpt(text.substr(0, 8)) + "'");
    const std::size_t bad = find_invalid_utf8(text);
    if (bad != std::string::npos)
      detail::io_fail(path_, "header is not valid UTF-8 at header byte ", bad, " (file byte ",
                      bad + 8, ")");
    json::Value root;
    try {
      root = json::parse(text);
    } catch (const json::ParseError& e) {
      detail::io_fail(path_, "header is not valid JSON (header byte ", e.offset(), ", file byte ",
                      e.offset() + 8, "): ", excerpt(e.what(), 200));
    }
    if (!root.is_object())
      detail::io_fail(path_, "header must be a JSON object, got ", root.kind_name());
    const std::uint64_t data_bytes = file.size - 8 - n;
    for (const auto& [name, value] : root.as_object()) {
      if (name == "__metadata__") {
        parse_metadata(value);
      } else {
        entries_.emplace(name, parse_entry(name, value, data_bytes));
      }
    }
    check_coverage(data_bytes);
    return data_bytes;
  }

  // The tensors' byte ranges, in file order, must tile the data section exactly: no overlap
  // (two tensors sharing bytes), no gap and no trailing bytes (data no tensor accounts for).
  void check_coverage(std::uint64_t data_bytes) const {
    std::vector<std::pair<const std::string*, const Entry*>> order;
    for (const auto& [name, e] : entries_) order.emplace_back(&name, &e);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
    });
    std::uint64_t covered = 0;
    const std::string* previous = nullptr;
    for (const auto& [name, e] : order) {
      if (e->begin < covered)
        detail::io_fail(path_, "tensors '", excerpt(*previous), "' and '", excerpt(*name),
                        "' overlap: '", excerpt(*name), "' begins at data byte ", e->begin,
                        " but '", excerpt(*previous), "' ends at ", covered);
      if (e->begin > covered)
        detail::io_fail(path_, "data bytes [", covered, ", ", e->begin,
                        ") belong to no tensor (a gap before tensor '", excerpt(*name),
                        "'); the data section must be fully indexed");
      covered = e->end;
      previous = name;
    }
    if (covered != data_bytes)
      detail::io_fail(path_, "data bytes [", covered, ", ", data_bytes,
                      ") after the last tensor belong to no tensor; the data section must be "
                      "fully indexed");
  }

  void parse_metadata(const json::Value& v) {
    if (!v.is_object())
      detail::io_fail(path_, "field '__metadata__' must be an object of strings, got ",
                      v.kind_name());
    for (const auto& [key, value] : v.as_object()) {
      if (!value.is_string())
        detail::io_fail(path_, "field '__metadata__': key '", excerpt(key), "' must map to a string, got ",
                        value.kind_name());
      metadata_.emplace(key, value.as_string());
    }
  }

  const json::Value& field(const std::string& name, const json::Value& entry, const char* key,
                           json::Value::Kind kind, const char* expected) const {
    const json::Value* v = entry.find(key);
    if (v == nullptr)
      detail::io_fail(path_, "tensor '", excerpt(name), "': missing field '", key, "' (", expected, ")");
    if (v->kind() != kind)
      detail::io_fail(path_, "tensor '", excerpt(name), "': field '", key, "' must be ", expected, ", got ",
                      v->kind_name());
    return *v;
  }

  // The integer items of array field `key`.
  std::vector<std::int64_t> int_array(const std::string& name, const json::Value& entry,
                                      const char* key, const char* expected) const {
    const auto& items = field(name, entry, key, json::Value::Kind::kArray, expected).as_array();
    std::vector<std::int64_t> out;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_int() || items[i].as_int() < 0)
        detail::io_fail(path_, "tensor '", excerpt(name), "': field '", key, "' item ", i, " must be a ",
                        "non-negative integer (", expected, "), got ",
                        items[i].is_int() ? std::to_string(items[i].as_int())
                                          : std::string(items[i].kind_name()));
      out.push_back(items[i].as_int());
    }
    return out;
  }

  Entry parse_entry(const std::string& name, const json::Value& v, std::uint64_t data_bytes) const {
    const auto control = std::find_if(name.begin(), name.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7F;
    });
    if (name.empty() || control != name.end())
      detail::io_fail(path_, "tensor name '", excerpt(name), "' is empty or contains a control ",
                      "character, expected a printable name");
    if (!v.is_object())
      detail::io_fail(path_, "tensor '", excerpt(name),
                      "' must be an object with dtype, shape and data_offsets, got ",
                      v.kind_name());
    Entry e;
    const std::string& dt =
        field(name, v, "dtype", json::Value::Kind::kString, "a string such as \"F32\"").as_string();
    const std::optional<Dtype> d = dtype_from_name(dt);
    if (!d)
      detail::io_fail(path_, "tensor '", excerpt(name), "': field 'dtype' has unknown dtype '", excerpt(dt),
                      "', expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
    e.dtype = *d;
    e.shape = int_array(name, v, "shape", "an array of extents");
    const std::vector<std::int64_t> off =
        int_array(name, v, "data_offsets", "an array [begin, end]");
    if (off.size() != 2)
      detail::io_fail(path_, "tensor '", excerpt(name), "': field 'data_offsets' has ", off.size(),
                      " items, expected 2 ([begin, end])");
    const std::optional<std::int64_t> numel = detail::checked_numel(e.shape);
    const std::size_t size = dtype_size(e.dtype);
    if (!numel ||
        *numel > std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(size))
      detail::io_fail(path_, "tensor '", excerpt(name), "': field 'shape' ", detail::shape_str(e.shape),
                      " overflows the element count");
    e.numel = *numel;
    const auto begin = static_cast<std::uint64_t>(off[0]);
    const auto end = static_cast<std::uint64_t>(off[1]);
    if (begin > end)
      detail::io_fail(path_, "tensor '", excerpt(name), "': field 'data_offsets' [", begin, ", ", end,
                      "] has begin > end");
    if (end > data_bytes)
      detail::io_fail(path_, "tensor '", excerpt(name), "': field 'data_offsets' [", begin, ", ", end,
                      "] reaches past the data section of ", data_bytes, " bytes");
    const auto expected = static_cast<std::uint64_t>(e.numel) * size;
    if (end - begin != expected)
      detail::io_fail(path_, "tensor '", excerpt(name), "': field 'data_offsets' [", begin, ", ", end,
                      "] spans ", end - begin, " bytes, expected ", expected, " for ",
                      dtype_name(e.dtype), " shape ", detail::shape_str(e.shape));
    e.begin = begin;
    e.end = end;
    return e;
  }

  std::string path_;
  std::vector<unsigned char> bytes_;  // the data section
  std::map<std::string, Entry, std::less<>> entries_;
  std::map<std::string, std::string> metadata_;
};

/// One tensor to write: `data` points at numel(shape) * dtype_size(dtype) bytes in host order.
struct SafetensorsEntry {
  std::string name;
  Dtype dtype;
  std::vector<std::int64_t> shape;
  const void* data;
};

/// An entry for the CPU tensor view `t`, dtype deduced from `T`. The view must outlive the
/// write_safetensors call.
template <class T>
SafetensorsEntry entry(std::string name, TensorView<const T, Cpu> t) {
  std::vector<std::int64_t> shape;
  for (int i = 0; i < t.shape().rank(); ++i) shape.push_back(t.shape()[i]);
  return SafetensorsEntry{std::move(name), dtype_of<T>(), std::move(shape), t.data()};
}

/// An entry for the CPU tensor `t`, which must outlive the write_safetensors call.
template <class T>
SafetensorsEntry entry(std::string name, const Tensor<T, Cpu>& t) {
  return entry<T>(std::move(name), t.cview());
}
template <class T>
SafetensorsEntry entry(std::string name, const Tensor<T, Cpu>&& t) = delete;

namespace detail {

// Validates the entries and returns their byte sizes, in the same order.
inline std::vector<std::size_t> entry_bytes(const std::string& path,
                                            const std::vector<SafetensorsEntry>& entries) {
  std::vector<std::size_t> bytes;
  std::vector<std::string_view> seen;
  for (const SafetensorsEntry& e : entries) {
    if (e.name.empty() || e.name == "__metadata__")
      io_fail(path, "cannot write a tensor named '", e.name, "' (reserved or empty)");
    if (std::find(seen.begin(), seen.end(), e.name) != seen.end())
      io_fail(path, "tensor '", e.name, "' appears twice");
    seen.push_back(e.name);
    if (dtype_size(e.dtype) == 0)
      io_fail(path, "tensor '", e.name, "': invalid dtype value ", static_cast<int>(e.dtype));
    for (std::int64_t x : e.shape)
      if (x < 0)
        io_fail(path, "tensor '", e.name, "': shape ", shape_str(e.shape),
                " has a negative extent, expected extents >= 0");
    const std::optional<std::int64_t> n = checked_numel(e.shape);
    if (!n || static_cast<std::uint64_t>(*n) >
                  std::numeric_limits<std::size_t>::max() / dtype_size(e.dtype))
      io_fail(path, "tensor '", e.name, "': shape ", shape_str(e.shape),
              " overflows the byte count");
    const std::size_t b = static_cast<std::size_t>(*n) * dtype_size(e.dtype);
    if (b > 0 && e.data == nullptr)
      io_fail(path, "tensor '", e.name, "': data is null, expected ", b, " bytes for ",
              dtype_name(e.dtype), " shape ", shape_str(e.shape));
    bytes.push_back(b);
  }
  return bytes;
}

// The serialized layout: the length-prefixed, space-padded header, then the entries' data in
// name order (`order`, `bytes`).
struct Layout {
  std::string prefix;  // 8-byte little-endian header length + header
  std::vector<std::size_t> order;
  std::vector<std::size_t> bytes;
};

inline Layout layout(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                     const std::map<std::string, std::string>& metadata) {
  Layout l;
  l.bytes = entry_bytes(path, entries);
  l.order.resize(entries.size());
  for (std::size_t i = 0; i < l.order.size(); ++i) l.order[i] = i;
  std::sort(l.order.begin(), l.order.end(),
            [&](std::size_t a, std::size_t b) { return entries[a].name < entries[b].name; });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      header += json::quote(k);
      header += ':';
      header += json::quote(v);
      first = false;
    }
    header += "}";
  }
  std::size_t offset = 0;
  for (std::size_t i : l.order) {
    const SafetensorsEntry& e = entries[i];
    if (header.size() > 1) header += ",";
    header += json::quote(e.name);
    header += ":{\"dtype\":\"";
    header += dtype_name(e.dtype);
    header += "\",\"shape\":[";
    for (std::size_t k = 0; k < e.shape.size(); ++k) {
      if (k) header += ',';
      header += std::to_string(e.shape[k]);
    }
    header += "],\"data_offsets\":[";
    header += std::to_string(offset);
    header += ',';
    header += std::to_string(offset + l.bytes[i]);
    header += "]}";
    offset += l.bytes[i];
  }
  header += "}";
  // Padding keeps the data section 8-byte aligned (the length prefix is 8 bytes too).
  header.append((8 - header.size() % 8) % 8, ' ');
  l.prefix.resize(8);
  store_le_bits<std::uint64_t>(reinterpret_cast<unsigned char*>(l.prefix.data()), header.size());
  l.prefix += header;
  return l;
}

// Writes entry `e`'s `count` data bytes little-endian.
inline void write_entry_data(AtomicWriter& w, const SafetensorsEntry& e, std::size_t count) {
  if (count == 0) return;
  if constexpr (std::endian::native == std::endian::little) {
    w.write(e.data, count);
  } else {
    std::vector<unsigned char> le(static_cast<const unsigned char*>(e.data),
                                  static_cast<const unsigned char*>(e.data) + count);
    const std::size_t width = dtype_size(e.dtype);
    for (std::size_t k = 0; k + width <= count; k += width)
      std::reverse(le.begin() + static_cast<std::ptrdiff_t>(k),
                   le.begin() + static_cast<std::ptrdiff_t>(k + width));
    w.write(le.data(), le.size());
  }
}

}  // namespace detail

/// Writes `entries` (sorted by name) and `metadata` to `path` atomically (io::write_file_atomic:
/// a temporary file in the same directory, fsync'ed and renamed over `path`). On any failure the
/// temporary file is removed, an existing `path` is left untouched and IoError is thrown.
/// Entries are validated (unique non-empty names, extents >= 0, data present) before anything
/// is created; the data streams from the entries to the file without an in-memory copy.
inline void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                              const std::map<std::string, std::string>& metadata = {}) {
  const detail::Layout l = detail::layout(path, entries, metadata);
  write_file_atomic("nddr::io::write_safetensors", path, [&](AtomicWriter& w) {
    w.write(l.prefix);
    for (std::size_t i : l.order) detail::write_entry_data(w, entries[i], l.bytes[i]);
  });
}

}  // namespace nddr::io
