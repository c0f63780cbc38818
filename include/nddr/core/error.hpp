#pragma once
/// \file
/// Typed errors. Every message names the component, the offending values and what was expected.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace nddr {

/// Base class of every error thrown by nddr.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A tensor shape does not match what an op or layer requires.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A run-time option (stride, epsilon, probability, ...) is out of range.
class OptionError : public Error {
 public:
  using Error::Error;
};

/// A value in the data (label, index, ...) is out of range.
class ValueError : public Error {
 public:
  using Error::Error;
};

/// Reading or writing a file failed; the message names the file and the field.
class IoError : public Error {
 public:
  using Error::Error;
};

/// A device (CUDA, cuDNN, cuBLAS) call failed.
class DeviceError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class... Args>
std::string concat(Args&&... args) {
  if constexpr (sizeof...(Args) == 0) {
    return {};
  } else {
    std::ostringstream os;
    (os << ... << std::forward<Args>(args));
    return os.str();
  }
}

}  // namespace detail

namespace detail {

/// The failing side of `check`, out of line and marked cold so the passing side stays small.
template <class E, class... Args>
[[noreturn, gnu::cold, gnu::noinline]] void check_failed(Args&&... args) {
  throw E(concat(std::forward<Args>(args)...));
}

}  // namespace detail

/// Throws `E` with the streamed concatenation of `args` unless `condition` holds. The message is
/// built only on failure: pass values (a `Shape`, numbers, `const char*`), not strings made from
/// them (`x.str()`, `std::to_string(n)`, `a + b`), which would be built on every call.
template <class E = Error, class... Args>
inline void check(bool condition, Args&&... args) {
  if (!condition) [[unlikely]]
    detail::check_failed<E>(std::forward<Args>(args)...);
}

}  // namespace nddr
