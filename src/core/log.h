// Logging to stderr with E/W/I/D levels; level from -v/-q or PATCHLLM_LOG_LEVEL (error|warn|info|debug).
#pragma once
#include <string>

#include "core/error.h"

namespace patchllm {

enum class LogLevel { ERROR = 0, WARN = 1, INFO = 2, DEBUG = 3 };

void log_set_level(LogLevel level);
LogLevel log_get_level();
void log_message(LogLevel level, const std::string& msg);

template <typename... A> void log_error(const A&... a) { log_message(LogLevel::ERROR, str(a...)); }
template <typename... A> void log_warn(const A&... a) { log_message(LogLevel::WARN, str(a...)); }
template <typename... A> void log_info(const A&... a) { log_message(LogLevel::INFO, str(a...)); }
template <typename... A> void log_debug(const A&... a) { log_message(LogLevel::DEBUG, str(a...)); }

// Progress for long jobs: a bar when stderr is a TTY, otherwise one line every few seconds. Thread-unsafe by design.
class Progress {
 public:
  Progress(std::string desc, long total);
  void update(long done, const std::string& extra = "");
  void finish(const std::string& extra = "");

 private:
  std::string _desc;
  long _total;
  double _start;
  double _last_print = -1e9;
  bool _tty;
};

double now_seconds();
std::string format_duration(double seconds);

}  // namespace patchllm
