// Crash safety of the real command-line tool: `limpq indicators` and
// `limpq finetune` are killed with SIGKILL at random moments, resumed with
// --resume until they finish, and must end with the same parameters,
// indicators and metrics as an uninterrupted run. After every kill each
// file in the run folder must be complete and readable. A SIGINT must
// checkpoint, exit with status 130 and say how to resume.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "limpq/quant/indicators.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "support/process.h"
#include "support/test_support.h"

namespace limpq::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string cli() { return limpq::testing::limpq_cli(LIMPQ_CLI_DEFAULT); }

pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  return limpq::testing::spawn(cli(), args, log);
}

using limpq::testing::wait_for;

// Metrics lines without their timing fields.
std::vector<nlohmann::json> metrics_of(const std::string& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("images_per_second");
    j.erase("train_seconds");
    out.push_back(j);
  }
  return out;
}

// Every file of a run folder is complete: checkpoints load (checksum
// verified), JSON parses, metrics lines parse; no temporary is left over
// that a reader could mistake for a result.
void expect_run_folder_readable(const std::string& dir) {
  if (!fs::exists(dir)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string path = entry.path().string();
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) continue;  // a temporary the killed writer had not renamed yet
    if (name == "checkpoint.pt") {
      EXPECT_NO_THROW(load_checkpoint(path)) << path;
    } else if (name == "indicators.json") {
      EXPECT_NO_THROW(quant::read_indicators(path)) << path;
    } else if (name == "config.json") {
      EXPECT_FALSE(nlohmann::json::parse(util::read_file(path), nullptr, false).is_discarded()) << path;
    } else if (name == "metrics.jsonl") {
      EXPECT_NO_THROW(metrics_of(dir)) << path;
    }
  }
}

class CrashTest : public limpq::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    ASSERT_TRUE(fs::exists(cli())) << "the limpq binary '" << cli() << "' is missing (set LIMPQ_CLI)";
    data_ = limpq::testing::write_synthetic_mnist(temp_path("data"), 96, 24);
    // A full-precision starting point, trained in-process.
    TrainConfig fp;
    fp.data.dataset("mnist").root(data_).batch_size(16).eval_batch_size(24).workers(1);
    fp.model.arch("resnet20");
    fp.optim.epochs(1).lr(0.05);
    fp.run.out_dir(temp_path("fp")).threads(1).progress(false);
    weights_ = run_train(fp, false).checkpoint;
  }

  // Checkpoints every 2 steps unless `periodic` is false.
  std::vector<std::string> args(const std::string& command, const std::string& out_dir, bool periodic = true) const {
    std::vector<std::string> a = {command,    "--dataset",         "mnist",          "--root",    data_,
                                  "--batch-size", "16",            "--eval-batch-size", "24",     "--workers",
                                  "1",        "--arch",            "resnet20",       "--weights", weights_,
                                  "--epochs", "2",                 "--threads",      "1",         "--progress",
                                  "false",    "--checkpoint-every", periodic ? "2" : "0", "--out-dir", out_dir};
    if (command == "indicators") a.insert(a.end(), {"--candidates", "4,2", "--fraction", "1"});
    if (command == "finetune") a.insert(a.end(), {"--uniform", "W3A3"});
    return a;
  }

  // Runs to completion without interruption.
  void run_straight(const std::string& command, const std::string& dir) {
    const pid_t pid = spawn(args(command, dir), dir + ".log");
    const int status = wait_for(pid, 300);
    ASSERT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "straight run failed (wait status " << status << "): " << util::read_file(dir + ".log");
  }

  // Kills the run at random moments, resuming each time, until it finishes
  // by itself. Returns the number of kills.
  int run_with_kills(const std::string& command, const std::string& dir, std::mt19937& rng, double max_delay) {
    std::uniform_real_distribution<double> delay(0.05, max_delay);
    int kills = 0;
    for (int attempt = 0; attempt < 40; ++attempt) {
      std::vector<std::string> a = args(command, dir);
      a.push_back("--resume");
      const pid_t pid = spawn(a, dir + ".log");
      // The last attempts run undisturbed so that the run always ends.
      const int status = wait_for(pid, attempt < 30 ? delay(rng) : 300);
      if (status != -1) {
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << util::read_file(dir + ".log");
        return kills;
      }
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      ++kills;
      expect_run_folder_readable(dir);
    }
    ADD_FAILURE() << "the run never finished";
    return kills;
  }

  void expect_same_results(const std::string& a, const std::string& b) {
    const Checkpoint ca = load_checkpoint(a + "/checkpoint.pt");
    const Checkpoint cb = load_checkpoint(b + "/checkpoint.pt");
    EXPECT_EQ(ca.step, cb.step);
    for (const auto& [name, t] : ca.model) {
      EXPECT_TRUE(torch::equal(t, cb.model.at(name))) << b << ": parameter " << name << " differs";
    }
    EXPECT_EQ(metrics_of(a), metrics_of(b)) << b;
    if (fs::exists(a + "/indicators.json")) {
      EXPECT_EQ(util::read_file(a + "/indicators.json"), util::read_file(b + "/indicators.json")) << b;
    }
  }

  std::string data_, weights_;
};

TEST_F(CrashTest, SigkillAtRandomPointsThenResumeEqualsAnUninterruptedRun) {
  std::mt19937 rng(20261125);
  for (const std::string command : {"indicators", "finetune"}) {
    SCOPED_TRACE(command);
    const std::string reference = temp_path(command + "_reference");
    run_straight(command, reference);
    const auto start = std::chrono::steady_clock::now();
    run_straight(command, temp_path(command + "_timing"));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    int total_kills = 0;
    for (int trial = 0; trial < 3; ++trial) {
      const std::string dir = temp_path(command + "_trial" + std::to_string(trial));
      total_kills += run_with_kills(command, dir, rng, seconds * 0.6);
      expect_same_results(reference, dir);
    }
    EXPECT_GE(total_kills, 3) << "the kills must actually interrupt runs";
    RecordProperty(command + "_kills", total_kills);
    std::printf("%s: %d SIGKILLs over 3 trials (uninterrupted run %.1f s), all resumed to identical results\n",
                command.c_str(), total_kills, seconds);
  }
}

TEST_F(CrashTest, SigintCheckpointsAndExitsWithAResumeHint) {
  const std::string reference = temp_path("reference");
  run_straight("finetune", reference);
  const std::string dir = temp_path("interrupted");
  // No periodic checkpoints: a mid-epoch checkpoint can only come from the signal.
  std::vector<std::string> a = args("finetune", dir, /*periodic=*/false);
  const pid_t pid = spawn(a, dir + ".log");
  // Interrupt once training has started (the config is written just before).
  for (int i = 0; i < 3000 && !fs::exists(dir + "/config.json"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(pid, SIGINT);
  const int status = wait_for(pid, 120);
  ASSERT_NE(status, -1);
  const std::string log = util::read_file(dir + ".log");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) GTEST_SKIP() << "the run ended before the signal arrived";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << log;
  EXPECT_THAT(log, HasSubstr("--resume"));
  EXPECT_NO_THROW(load_checkpoint(dir + "/checkpoint.pt"));
  a.push_back("--resume");
  const int resumed = wait_for(spawn(a, dir + ".log"), 300);
  ASSERT_TRUE(resumed != -1 && WIFEXITED(resumed) && WEXITSTATUS(resumed) == 0) << util::read_file(dir + ".log");
  expect_same_results(reference, dir);
}

}  // namespace
}  // namespace limpq::train
