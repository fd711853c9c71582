// dist::launch_local, the library behind `limpq launch`: the rendezvous
// variables each worker gets, a failing worker stopping the others, and the
// private rendezvous directory removed at the end. Workers here are shell
// commands; tests/dist/dist_cli_test.cpp launches real training.
#include "limpq/dist/launch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::dist {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

class LaunchTest : public limpq::testing::SeededTest {};

TEST_F(LaunchTest, EveryWorkerGetsItsRankAndAPrivateStore) {
  const std::string dir = temp_path("workers");
  std::filesystem::create_directories(dir);
  LaunchOptions options;
  options.workers = 3;
  const int status = launch_local(
      {"sh", "-c",
       "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $LIMPQ_RENDEZVOUS_FILE $(stat -c %a "
       "\"$(dirname \"$LIMPQ_RENDEZVOUS_FILE\")\")\" > " + dir + "/$RANK"},
      options);
  EXPECT_EQ(status, 0);
  std::string store;
  for (int r = 0; r < 3; ++r) {
    const std::string line = util::read_file(dir + "/" + std::to_string(r));
    const std::string prefix = std::to_string(r) + " " + std::to_string(r) + " 3 3 ";
    ASSERT_EQ(line.rfind(prefix, 0), 0u) << line;
    EXPECT_THAT(line, MatchesRegex(".*/limpq-launch-[A-Za-z0-9]+/store 700\n")) << line;
    const std::string path = line.substr(prefix.size(), line.rfind(' ') - prefix.size());
    if (r == 0) store = path;
    EXPECT_EQ(path, store) << "all workers meet in one store";
  }
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(store).parent_path()))
      << "the rendezvous directory is removed when the launch ends";
}

TEST_F(LaunchTest, AFailingWorkerStopsTheOthersAndGivesItsStatus) {
  LaunchOptions options;
  options.workers = 2;
  options.grace = std::chrono::milliseconds(5000);
  const auto start = std::chrono::steady_clock::now();
  // Rank 1 fails at once; rank 0 would run for a minute.
  const int status = launch_local({"sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60"}, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(status, 3);
  EXPECT_LT(seconds, 30) << "the sleeping worker was not stopped";
}

TEST_F(LaunchTest, AWorkerThatIgnoresSigtermIsKilledAfterTheGracePeriod) {
  LaunchOptions options;
  options.workers = 2;
  options.grace = std::chrono::milliseconds(300);
  const int status = launch_local(
      {"sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 4; fi; trap '' TERM; while :; do sleep 0.1; done"}, options);
  EXPECT_EQ(status, 4);
}

TEST_F(LaunchTest, ACommandThatCannotRunIsAnError) {
  LaunchOptions options;
  options.workers = 1;
  EXPECT_EQ(launch_local({"/nonexistent/limpq-worker"}, options), 127);
  EXPECT_THAT([] { launch_local({}, LaunchOptions()); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("no worker command")));
  options.workers = 0;
  EXPECT_THAT([&] { launch_local({"true"}, options); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("must be positive, got 0")));
}

}  // namespace
}  // namespace limpq::dist
