#pragma once
/// \file
/// A small JSON reader (recursive descent) and string quoting, enough for safetensors headers.
///
/// Numbers become `std::int64_t` when written without fraction or exponent and in range,
/// otherwise `double`. Objects keep their members in file order and reject duplicate keys.
/// Every parse error is a `json::ParseError` carrying the byte offset where it was detected.

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr::io::json {

/// Malformed JSON text; `offset()` is the byte where the problem was found.
class ParseError : public IoError {
 public:
  ParseError(std::size_t offset, const std::string& what)
      : IoError(nddr::detail::concat("invalid JSON at byte ", offset, ": ", what)),
        offset_(offset) {}

  /// Byte offset into the parsed text.
  std::size_t offset() const { return offset_; }

 private:
  std::size_t offset_;
};

/// One JSON value: null, boolean, integer, floating-point number, string, array or object.
class Value {
 public:
  enum class Kind { kNull, kBool, kInt, kDouble, kString, kArray, kObject };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;
  explicit Value(bool b) : kind_(Kind::kBool), bool_(b) {}
  explicit Value(std::int64_t i) : kind_(Kind::kInt), int_(i) {}
  explicit Value(double d) : kind_(Kind::kDouble), double_(d) {}
  explicit Value(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}
  explicit Value(Array a) : kind_(Kind::kArray), array_(std::move(a)) {}
  explicit Value(Object o) : kind_(Kind::kObject), object_(std::move(o)) {}

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kDouble; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }

  /// "null", "boolean", "integer", "number", "string", "array" or "object", for messages.
  const char* kind_name() const {
    switch (kind_) {
      case Kind::kNull:
        return "null";
      case Kind::kBool:
        return "boolean";
      case Kind::kInt:
        return "integer";
      case Kind::kDouble:
        return "number";
      case Kind::kString:
        return "string";
      case Kind::kArray:
        return "array";
      case Kind::kObject:
        return "object";
    }
    return "?";
  }

  // Typed access; each throws IoError when the value has another kind.
  bool as_bool() const {
    expect(Kind::kBool);
    return bool_;
  }
  std::int64_t as_int() const {
    expect(Kind::kInt);
    return int_;
  }
  /// Integers convert to double.
  double as_double() const {
    if (kind_ == Kind::kInt) return static_cast<double>(int_);
    expect(Kind::kDouble);
    return double_;
  }
  const std::string& as_string() const {
    expect(Kind::kString);
    return string_;
  }
  const Array& as_array() const {
    expect(Kind::kArray);
    return array_;
  }
  const Object& as_object() const {
    expect(Kind::kObject);
    return object_;
  }

  /// The member named `key` of an object, or nullptr when absent or not an object.
  const Value* find(std::string_view key) const {
    if (kind_ != Kind::kObject) return nullptr;
    for (const auto& [k, v] : object_)
      if (k == key) return &v;
    return nullptr;
  }

 private:
  void expect(Kind k) const {
    if (kind_ != k)
      throw IoError(nddr::detail::concat("nddr::io::json::Value: expected ", Value(k).kind_name(),
                                         ", got ", kind_name()));
  }
  explicit Value(Kind k) : kind_(k) {}

  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  std::int64_t int_ = 0;
  double double_ = 0.0;
  std::string string_;
  Array array_;
  Object object_;
};

/// Appends the code point `cp` (at most 0x10FFFF, not a surrogate) to `out` in UTF-8.
inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace detail {

class Parser {
 public:
  Parser(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  Value document() {
    Value v = value(0);
    skip_space();
    if (pos_ != s_.size()) fail("unexpected trailing characters after the top-level value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw ParseError(pos_, what); }
  [[noreturn]] void fail_at(std::size_t at, const std::string& what) const {
    throw ParseError(at, what);
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return s_[pos_]; }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
      ++pos_;
  }

  void expect_char(char c, const char* context) {
    skip_space();
    if (at_end() || peek() != c)
      fail(nddr::detail::concat("expected '", c, "' ", context,
                                at_end() ? std::string(", got end of text")
                                         : nddr::detail::concat(", got '", peek(), "'")));
    ++pos_;
  }

  Value value(int depth) {
    skip_space();
    if (at_end()) fail("expected a value, got end of text");
    switch (peek()) {
      case '{':
        return object(depth + 1);
      case '[':
        return array(depth + 1);
      case '"':
        return Value(string());
      case 't':
        return literal("true", Value(true));
      case 'f':
        return literal("false", Value(false));
      case 'n':
        return literal("null", Value());
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return number();
        fail(nddr::detail::concat("unexpected character '", peek(), "'"));
    }
  }

  void enter(int depth) {
    if (depth > max_depth_)
      fail(nddr::detail::concat("nesting deeper than ", max_depth_, " levels"));
  }

  Value object(int depth) {
    enter(depth);
    ++pos_;
    Value::Object members;
    std::unordered_set<std::string> keys;  // a linear search would be quadratic in the keys
    skip_space();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return Value(std::move(members));
    }
    for (;;) {
      skip_space();
      if (at_end() || peek() != '"') fail("expected a string key in object");
      const std::size_t key_at = pos_;
      std::string key = string();
      if (!keys.insert(key).second) fail_at(key_at, "duplicate key \"" + key + "\"");
      expect_char(':', "after object key");
      Value v = value(depth);
      members.emplace_back(std::move(key), std::move(v));
      skip_space();
      if (at_end()) fail("unterminated object, expected ',' or '}'");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return Value(std::move(members));
      }
      fail(nddr::detail::concat("expected ',' or '}' in object, got '", peek(), "'"));
    }
  }

  Value array(int depth) {
    enter(depth);
    ++pos_;
    Value::Array items;
    skip_space();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return Value(std::move(items));
    }
    for (;;) {
      items.push_back(value(depth));
      skip_space();
      if (at_end()) fail("unterminated array, expected ',' or ']'");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value(std::move(items));
      }
      fail(nddr::detail::concat("expected ',' or ']' in array, got '", peek(), "'"));
    }
  }

  Value literal(std::string_view word, Value v) {
    if (s_.substr(pos_, word.size()) != word)
      fail(nddr::detail::concat("invalid literal, expected '", word, "'"));
    pos_ += word.size();
    return v;
  }

  std::uint32_t hex4() {
    if (s_.size() - pos_ < 4) fail("truncated \\u escape, expected 4 hex digits");
    std::uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_];
      std::uint32_t d = 0;
      if (c >= '0' && c <= '9')
        d = static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        d = static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        d = static_cast<std::uint32_t>(c - 'A' + 10);
      else
        fail("invalid hex digit in \\u escape");
      cp = cp * 16 + d;
      ++pos_;
    }
    return cp;
  }

  // A \uXXXX escape, pairing UTF-16 surrogates into one code point.
  std::uint32_t unicode_escape() {
    const std::size_t at = pos_ - 2;
    std::uint32_t cp = hex4();
    if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(at, "unpaired low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (s_.substr(pos_, 2) != "\\u") fail_at(at, "high surrogate not followed by \\u escape");
      pos_ += 2;
      const std::uint32_t lo = hex4();
      if (lo < 0xDC00 || lo > 0xDFFF) fail_at(at, "high surrogate not followed by low surrogate");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return cp;
  }

  std::string string() {
    const std::size_t start = pos_;
    ++pos_;
    std::string out;
    for (;;) {
      if (at_end()) fail_at(start, "unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        fail("unescaped control character in string");
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) fail_at(start, "unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          append_utf8(out, unicode_escape());
          break;
        default:
          fail_at(pos_ - 2, nddr::detail::concat("invalid escape '\\", e, "'"));
      }
    }
  }

  bool digit() const { return !at_end() && peek() >= '0' && peek() <= '9'; }

  Value number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (!digit()) fail("expected a digit in number");
    if (peek() == '0') {
      ++pos_;
      if (digit()) fail_at(start, "leading zero in number");
    } else {
      while (digit()) ++pos_;
    }
    bool integral = true;
    if (!at_end() && peek() == '.') {
      integral = false;
      ++pos_;
      if (!digit()) fail("expected a digit after '.' in number");
      while (digit()) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digit()) fail("expected a digit in exponent");
      while (digit()) ++pos_;
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    if (integral) {
      std::int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) return Value(i);
    }
    double d = 0.0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec != std::errc() || r.ptr != last) fail_at(start, "number out of range");
    return Value(d);
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  int max_depth_;
};

}  // namespace detail

/// Parses a complete JSON document; throws ParseError (with the byte offset) on malformed text
/// or nesting deeper than `max_depth` arrays/objects.
inline Value parse(std::string_view text, int max_depth = 64) {
  return detail::Parser(text, max_depth).document();
}

/// `v` as a JSON number with `digits` significant digits (17: the double exactly), or `null` for
/// NaN and infinities, which JSON cannot represent.
inline std::string number(double v, int digits = 17) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

/// `s` as a JSON string literal, with quotes, escaping '"', '\\' and control characters.
inline std::string quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += kHex[u >> 4];
          out += kHex[u & 0xF];
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace nddr::io::json
