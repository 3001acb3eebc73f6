#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/file.h"

namespace patchllm::test {

std::string source_dir() { return PATCHLLM_SOURCE_DIR; }

std::string shared_dir() {
  if (const char* env = std::getenv("PATCHLLM_SHARED_DIR")) return dir_exists(env) ? env : "";
  std::string d = source_dir() + "/../shared";
  return dir_exists(d) ? d : "";
}

std::string temp_dir(const std::string& tag) {
  const char* base = std::getenv("TMPDIR");
  std::string root = std::string(base ? base : "/tmp") + "/patchllm-test";
  dir_create(root);
  std::string templ = root + "/" + tag + "-XXXXXX";
  std::string buf = templ;
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + templ);
  return buf;
}

static std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

CliResult run_cli(const std::string& args) {
  std::string dir = temp_dir("cli");
  std::string cmd = std::string("'") + PATCHLLM_CLI_PATH + "' " + args + " >" + dir + "/out 2>" + dir + "/err";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(dir + "/out");
  r.err = slurp(dir + "/err");
  return r;
}

std::string stories260k_hf(const std::string& shared_model_dir) {
  static std::string dir;
  if (!dir.empty()) return dir;
  std::string out = temp_dir("stories") + "/hf";
  auto r = run_cli("-q convert --from llama2c '" + shared_model_dir + "/stories260K.bin' --tokenizer '" +
                   shared_model_dir + "/tok512.bin' -o '" + out + "'");
  EXPECT_EQ(r.code, 0) << r.err;
  if (r.code == 0) dir = out;
  return dir;
}

}  // namespace patchllm::test
