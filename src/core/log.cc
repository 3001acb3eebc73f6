#include "core/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace patchllm {
namespace {
LogLevel initial_level() {
  const char* env = std::getenv("PATCHLLM_LOG_LEVEL");
  if (!env) return LogLevel::INFO;
  if (!std::strcmp(env, "error")) return LogLevel::ERROR;
  if (!std::strcmp(env, "warn")) return LogLevel::WARN;
  if (!std::strcmp(env, "debug")) return LogLevel::DEBUG;
  return LogLevel::INFO;
}
LogLevel g_level = initial_level();
}  // namespace

void log_set_level(LogLevel level) { g_level = level; }
LogLevel log_get_level() { return g_level; }

void log_message(LogLevel level, const std::string& msg) {
  if (level > g_level) return;
  static const char tags[] = {'E', 'W', 'I', 'D'};
  std::fprintf(stderr, "%c %s\n", tags[static_cast<int>(level)], msg.c_str());
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string format_duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  char buf[32];
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

Progress::Progress(std::string desc, long total)
    : _desc(std::move(desc)), _total(total), _start(now_seconds()), _tty(isatty(2)) {}

void Progress::update(long done, const std::string& extra) {
  if (g_level < LogLevel::INFO) return;
  double now = now_seconds();
  bool last = done >= _total;
  if (!last && now - _last_print < (_tty ? 0.2 : 5.0)) return;
  _last_print = now;
  double el = now - _start;
  double rate = el > 0 ? done / el : 0;
  double eta = rate > 0 ? (_total - done) / rate : -1;
  int pct = _total > 0 ? static_cast<int>(100.0 * done / _total) : 100;
  if (_tty) {
    int w = 20, fill = _total > 0 ? static_cast<int>(w * done / _total) : w;
    std::string bar(fill, '#');
    bar.resize(w, ' ');
    std::fprintf(stderr, "\r%s: %3d%%|%s| %ld/%ld [%s<%s, %.2fit/s] %s\033[K", _desc.c_str(), pct, bar.c_str(), done,
                 _total, format_duration(el).c_str(), format_duration(eta).c_str(), rate, extra.c_str());
    if (last) std::fprintf(stderr, "\n");
  } else {
    std::fprintf(stderr, "%s: %3d%% %ld/%ld elapsed %s ETA %s %s\n", _desc.c_str(), pct, done, _total,
                 format_duration(el).c_str(), format_duration(eta).c_str(), extra.c_str());
  }
}

void Progress::finish(const std::string& extra) { update(_total, extra); }

}  // namespace patchllm
