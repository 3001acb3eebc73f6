// Errors: the library throws patchllm::Error subclasses; the CLI prints "error: <message>" and exits 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace patchllm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A caller passed something the library cannot accept (shape, flag, unsupported architecture).
struct InvalidArgument : Error {
  using Error::Error;
};
// A file is missing, truncated or malformed. Messages name the file.
struct FormatError : Error {
  using Error::Error;
};
struct CudaError : Error {
  using Error::Error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... R>
void append(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// str("a", 1, "b") -> "a1b"
template <typename... A>
std::string str(const A&... a) {
  std::ostringstream os;
  detail::append(os, a...);
  return os.str();
}

}  // namespace patchllm

// PATCHLLM_CHECK(cond, ErrorType, message parts...): throws ErrorType("message") when cond is false.
#define PATCHLLM_CHECK(cond, Type, ...)                      \
  do {                                                        \
    if (!(cond)) throw ::patchllm::Type(::patchllm::str(__VA_ARGS__)); \
  } while (0)
