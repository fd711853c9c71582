#include "limpq/util/atomic_file.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "support/test_support.h"

namespace limpq::util {
namespace {

class AtomicFileTest : public limpq::testing::SeededTest {};

size_t entries_in(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST_F(AtomicFileTest, WritesCreatesParentsAndReplaces) {
  const std::string path = temp_path("a/b/file.bin");
  write_file_atomic(path, std::string("first\0x", 7));
  EXPECT_EQ(read_file(path), std::string("first\0x", 7));
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
  EXPECT_EQ(entries_in(temp_path("a/b")), 1u) << "no temporary file is left behind";
}

TEST_F(AtomicFileTest, FailureKeepsThePreviousFile) {
  const std::string path = temp_path("keep.txt");
  write_file_atomic(path, "good");
  // A directory squatting on the temporary name makes the write fail.
  std::filesystem::create_directory(path + ".tmp." + std::to_string(::getpid()));
  try {
    write_file_atomic(path, "bad");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(path), std::string::npos);
  }
  EXPECT_EQ(read_file(path), "good");
}

// A full disk, simulated with a file-size limit: the write fails with an
// error naming the file, and the previous file survives untouched.
TEST_F(AtomicFileTest, FullDiskIsAnErrorAndKeepsThePreviousFile) {
  const std::string path = temp_path("ckpt.bin");
  write_file_atomic(path, "previous good content");
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of the signal
  struct rlimit small = old_limit;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    write_file_atomic(path, std::string(1 << 20, 'x'));
  } catch (const c10::Error& e) {
    message = e.what_without_backtrace();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_EQ(read_file(path), "previous good content");
  EXPECT_EQ(entries_in(temp_dir()), 1u) << "the partial temporary file is removed";
}

TEST_F(AtomicFileTest, ReadingAMissingFileNamesIt) {
  try {
    read_file(temp_path("missing"));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("missing"), std::string::npos);
  }
}

}  // namespace
}  // namespace limpq::util
