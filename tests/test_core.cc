// Core utilities: SHA-256 against published vectors and Python's hashlib, atomic writes, provenance.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/provenance.h"
#include "test_util.h"

using namespace patchllm;

TEST(Core, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Lengths around the padding boundary (55, 56 bytes) and a multi-block input; values from Python's hashlib.
  EXPECT_EQ(sha256_hex(std::string(55, 'y').data(), 55),
            "fb66d40c3bfff05b0d5af8612d0abfbfacc6f5f26c330bc7ad634f1f44bc20ad");
  EXPECT_EQ(sha256_hex(std::string(56, 'y').data(), 56),
            "4877e564e5e36e367c7c8d59670774becd3350610b6df4c399c9fa9b66da5813");
  EXPECT_EQ(sha256_hex(std::string(1000, 'x').data(), 1000),
            "44f8354494a5ba03ba1792a8d3e9c534c47a9181980fde7a3f44b06ef2ae7c7f");
}

TEST(Core, AtomicWriteReplacesAndLeavesNoTemp) {
  auto dir = test::temp_dir("core");
  file_write_atomic(dir + "/a.txt", "one");
  file_write_atomic(dir + "/a.txt", "two");
  EXPECT_EQ(file_read(dir + "/a.txt"), "two");
  EXPECT_EQ(sha256_file(dir + "/a.txt"), sha256_hex("two", 3));
  EXPECT_THROW(file_write_atomic(dir + "/missing/dir/a.txt", "x"), Error);
  EXPECT_THROW(file_read(dir + "/nope"), FormatError);
}

// Found by fuzz/fuzz_model_config: a number out of double's range is nlohmann's out_of_range, not a parse_error,
// and escaped config_load's catch as a crash of the CLI's generic handler.
TEST(Core, JsonReadFileTurnsEveryJsonErrorIntoAFormatErrorNamingTheFile) {
  auto dir = test::temp_dir("core_json");
  file_write_atomic(dir + "/ok.json", R"({"a": [1, 2.5, "x"]})");
  EXPECT_EQ(json_read_file(dir + "/ok.json")["a"][1].get<double>(), 2.5);
  for (const char* text : {R"({"a": 1e999})", R"({"a": )", "\xff", ""}) {
    file_write_atomic(dir + "/bad.json", text);
    try {
      json_read_file(dir + "/bad.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(dir + "/bad.json: malformed JSON"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(json_read_file(dir + "/missing.json"), FormatError);
}

TEST(Core, ProvenanceHashesInputs) {
  auto dir = test::temp_dir("core");
  file_write_atomic(dir + "/in.txt", "abc");
  auto j = provenance_json({dir + "/in.txt"});
  EXPECT_EQ(j["inputs"][dir + "/in.txt"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(j["tool"], "patchllm");
  EXPECT_FALSE(j["git_hash"].get<std::string>().empty());
}

// The git hash in provenance is the checkout's at build time (cmake/git_hash.cmake runs at every build), with
// "-dirty" where tracked files differ from HEAD: read back from git here. Before, cmake read it at configure time,
// so an incremental build after a commit stamped its outputs with an older commit. (Run the tests on the binary
// built from this tree: a commit or edit after building makes this fail, which is what it is about.)
TEST(Core, ProvenanceGitHashIsTheCheckoutBuiltFrom) {
  auto run = [](const std::string& cmd, std::string& out) {
    out.clear();
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return false;
    char buf[256];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    return pclose(f) == 0;
  };
  const std::string git = "git -C '" + test::source_dir() + "' ";
  std::string head, changes;
  if (!run(git + "rev-parse --short=12 HEAD 2>/dev/null", head) || head.size() < 12)
    GTEST_SKIP() << "no git checkout at " << test::source_dir() << " (or no git): nothing to compare against";
  ASSERT_TRUE(run(git + "--no-optional-locks status --porcelain --untracked-files=no", changes));
  const std::string want = head.substr(0, 12) + (changes.empty() ? "" : "-dirty");
  EXPECT_EQ(provenance_json({})["git_hash"].get<std::string>(), want);
  EXPECT_NE(version_string().find("(" + want + ")"), std::string::npos) << version_string();
}

// dir_remove_all removes a tree (files, nested and empty directories) and a symlink in it without following it;
// a missing path is fine; path_rename reports failures as text.
TEST(Core, DirRemoveAllDoesNotFollowSymlinks) {
  std::string tmp = test::temp_dir("rmtree");
  std::string keep = tmp + "/outside", tree = tmp + "/tree";
  dir_create(keep);
  file_write_atomic(keep + "/precious", "x");
  dir_create(tree + "/a/b/empty");
  file_write_atomic(tree + "/a/b/f", "1");
  file_write_atomic(tree + "/g", "2");
  ASSERT_EQ(::symlink(keep.c_str(), (tree + "/a/link").c_str()), 0);
  EXPECT_EQ(dir_remove_all(tree), "");
  EXPECT_FALSE(dir_exists(tree));
  EXPECT_TRUE(file_exists(keep + "/precious"));
  EXPECT_EQ(dir_remove_all(tree), "");  // already gone
  EXPECT_EQ(path_rename(tree, tmp + "/x"), std::string(std::strerror(ENOENT)));
  EXPECT_EQ(path_rename(keep, tmp + "/moved"), "");
  EXPECT_TRUE(file_exists(tmp + "/moved/precious"));
}

// disk_free_bytes: positive on a real directory, and it drops by about what a file written there takes.
TEST(Core, DiskFreeBytes) {
  std::string tmp = test::temp_dir("free");
  EXPECT_EQ(disk_free_bytes(tmp + "/missing/dir"), -1);
  const int64_t before = disk_free_bytes(tmp);
  ASSERT_GT(before, 0);
  file_write_atomic(tmp + "/blob", std::string(size_t(8) << 20, 'x'));  // 8 MiB
  const int64_t after = disk_free_bytes(tmp);
  // Other writers share the file system: only the direction and a loose size are checked.
  EXPECT_LT(after, before - (4 << 20));
}
