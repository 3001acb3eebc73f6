#include "learn/learn_state.h"

#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "ops/adamw_state.h"

namespace patchllm {

namespace {

constexpr const char* FORMAT = "patchllm-learn-state";
constexpr const char* VERSION = "1";

// AdamW's tensors of parameter i of group g: "adamw.<g>.<i>.exp_avg" etc.; its step in the metadata as ".step".
std::string adamw_name(size_t g, size_t i) { return "adamw." + std::to_string(g) + "." + std::to_string(i); }

// sha256 over every tensor's name and bytes, in name order: catches a file whose data was overwritten (the
// safetensors reader checks the layout, not the values).
template <typename BytesOf>
std::string tensors_sha256(const std::vector<std::string>& names, BytesOf bytes_of) {
  std::string all;
  for (const auto& n : names) {
    const auto [data, size] = bytes_of(n);
    all += n + ":" + sha256_hex(data, size) + "\n";
  }
  return sha256_hex(all.data(), all.size());
}

torch::Tensor host(const torch::Tensor& t) { return t.detach().cpu().contiguous(); }

int64_t parse_step(const std::string& path, const std::string& what, const std::string& v) {
  PATCHLLM_CHECK(!v.empty() && v.size() <= 18 && v.find_first_not_of("0123456789") == std::string::npos, FormatError,
                 path, ": ", what, " '", v, "' is not a step count");
  return std::stoll(v);
}

}  // namespace

void save_learn_state(const std::string& path, int64_t step, const std::string& key,
                      const std::vector<StateTensor>& tensors, torch::optim::AdamW& opt, bool required) {
  std::map<std::string, torch::Tensor> ts;
  std::map<std::string, std::string> meta = {
      {"format", FORMAT}, {"format_version", VERSION}, {"step", std::to_string(step)}, {"key", key}};
  for (const auto& t : tensors) {
    PATCHLLM_CHECK(!ts.count(t.name), InvalidArgument, path, ": two learning-state tensors named ", t.name);
    ts[t.name] = host(t.t);
  }
  const auto& groups = opt.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < groups[g].params().size(); ++i) {
      const auto* st = adamw_state(opt, groups[g].params()[i]);
      if (!st) continue;  // before its first step
      const std::string n = adamw_name(g, i);
      ts[n + ".exp_avg"] = host(st->exp_avg());
      ts[n + ".exp_avg_sq"] = host(st->exp_avg_sq());
      if (st->max_exp_avg_sq().defined()) ts[n + ".max_exp_avg_sq"] = host(st->max_exp_avg_sq());
      meta[n + ".step"] = std::to_string(st->step());
    }
  }
  // Room for the file and its temp copy's rename (the old file stays until then).
  int64_t need = 16 << 20;
  for (const auto& [n, t] : ts) need += t.numel() * t.element_size();
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.find_last_of('/'));
  const int64_t avail = disk_free_bytes(dir);
  if (avail >= 0 && avail < need) {
    const std::string why = str(path, ": not enough disk space for the learning state (needs ", need >> 20, " MiB, ",
                                avail >> 20, " MiB free)");
    PATCHLLM_CHECK(!required, Error, why);
    log_warn(why, "; not saved, the run goes on (a --resume would start from the last saved state)");
    return;
  }
  std::vector<std::string> names;
  for (const auto& [n, t] : ts) names.push_back(n);
  meta["sha256"] = tensors_sha256(names, [&](const std::string& n) {
    const torch::Tensor& t = ts.at(n);
    return std::pair<const void*, size_t>(t.data_ptr(), size_t(t.numel() * t.element_size()));
  });
  try {
    safetensors_write(path, ts, meta);
  } catch (const Error& e) {  // e.g. the disk filled up meanwhile: the old state stays (atomic write)
    if (required) throw;
    log_warn(e.what(), "; the learning state was not saved, the run goes on");
  }
}

int64_t load_learn_state(const std::string& path, const std::string& key, const std::vector<StateTensor>& tensors,
                         torch::optim::AdamW& opt) {
  const auto damaged = [&](const std::string& what) {
    const std::string line = what.substr(0, what.find('\n'));
    return FormatError(str(path, ": not a readable learning state (", line, "); remove it to start over"));
  };
  try {
    std::unique_ptr<SafetensorsFile> file;
    try {
      file = std::make_unique<SafetensorsFile>(path);
    } catch (const Error& e) {  // one line naming the file already; say what it was read as
      throw FormatError(str(e.what(), " (read as a learning state, a safetensors file); remove it to start over"));
    }
    const SafetensorsFile& f = *file;
    const auto& meta = f.metadata();
    const auto get = [&](const std::string& name) -> const std::string& {
      auto it = meta.find(name);
      PATCHLLM_CHECK(it != meta.end(), FormatError, path, ": not a learning state (no '", name,
                     "' in its metadata); remove it to start over");
      return it->second;
    };
    PATCHLLM_CHECK(get("format") == FORMAT, FormatError, path, ": not a learning state (format '", get("format"),
                   "'); remove it to start over");
    PATCHLLM_CHECK(get("format_version") == VERSION, FormatError, path, ": learning state version ",
                   get("format_version"), ", this patchllm reads ", VERSION, "; remove it to start over");
    std::vector<std::string> names;
    for (const auto& [n, e] : f.entries()) names.push_back(n);
    const std::string sum = tensors_sha256(names, [&](const std::string& n) {
      const auto& e = f.entry(n);
      return std::pair<const void*, size_t>(f.raw(n), size_t(e.end - e.begin));
    });
    PATCHLLM_CHECK(sum == get("sha256"), FormatError, path,
                   ": damaged (its tensors do not match their sha256); remove it to start over");
    PATCHLLM_CHECK(get("key") == key, InvalidArgument, path,
                   ": was written by a run with different settings or data; resume needs the same command (or "
                   "remove the state file)");
    const int64_t step = parse_step(path, "step", get("step"));

    std::set<std::string> used;
    const auto load = [&](const std::string& name, const torch::Tensor& like) {
      PATCHLLM_CHECK(f.has(name), FormatError, path, ": ", name, " missing; remove it to start over");
      torch::Tensor v = f.load(name);
      PATCHLLM_CHECK(v.sizes() == like.sizes() && v.scalar_type() == like.scalar_type(), FormatError, path, ": ", name,
                     " is ", v.scalar_type(), " ", v.sizes(), ", this run's is ", like.scalar_type(), " ",
                     like.sizes());
      used.insert(name);
      return v.to(like.device());
    };
    // Everything is read and checked before anything is changed, so a refused file leaves the run as it was.
    std::vector<torch::Tensor> values;
    for (const auto& t : tensors) values.push_back(load(t.name, t.t));
    struct Moments {
      torch::Tensor p;
      std::unique_ptr<torch::optim::AdamWParamState> st;
    };
    std::vector<Moments> moments;
    const auto& groups = opt.param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      for (size_t i = 0; i < groups[g].params().size(); ++i) {
        const std::string n = adamw_name(g, i);
        if (!f.has(n + ".exp_avg")) continue;  // saved before the parameter's first step
        const torch::Tensor& p = groups[g].params()[i];
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(parse_step(path, n + ".step", get(n + ".step")));
        st->exp_avg(load(n + ".exp_avg", p));
        st->exp_avg_sq(load(n + ".exp_avg_sq", p));
        if (f.has(n + ".max_exp_avg_sq")) st->max_exp_avg_sq(load(n + ".max_exp_avg_sq", p));
        moments.push_back({p, std::move(st)});
      }
    }
    for (const auto& n : names)
      PATCHLLM_CHECK(used.count(n), FormatError, path, ": holds ", n, ", which this run does not have; remove it to "
                     "start over");
    torch::NoGradGuard ng;
    for (size_t j = 0; j < tensors.size(); ++j) {
      torch::Tensor dst = tensors[j].t;  // the handle shares the run's storage
      dst.copy_(values[j]);
    }
    for (auto& m : moments) set_adamw_state(opt, m.p, std::move(m.st));
    return step;
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw damaged(e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw damaged(e.what());
  }
}

}  // namespace patchllm
