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

/// Throws `E` with the streamed concatenation of `args` unless `condition` holds.
template <class E = Error, class... Args>
void check(bool condition, Args&&... args) {
  if (!condition) throw E(detail::concat(std::forward<Args>(args)...));
}

}  // namespace nddr
