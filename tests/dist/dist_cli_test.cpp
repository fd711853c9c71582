// Data-parallel training through the CLI on loopback: two Gloo workers
// against one process with the same global batch, and a killed worker.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "limpq/quant/indicators.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "support/process.h"
#include "support/test_support.h"

namespace limpq::dist {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string cli() { return limpq::testing::limpq_cli(LIMPQ_CLI_DEFAULT); }

pid_t spawn(const std::vector<std::string>& args, const std::string& log,
            const std::vector<std::pair<std::string, std::string>>& env = {}) {
  return limpq::testing::spawn(cli(), args, log, env);
}

using limpq::testing::wait_for;
bool succeeded(int status) { return limpq::testing::exited_cleanly(status); }

double max_parameter_difference(const std::string& a_path, const std::string& b_path) {
  const auto a = train::load_checkpoint(a_path);
  const auto b = train::load_checkpoint(b_path);
  EXPECT_EQ(a.step, b.step);
  double worst = 0;
  for (const auto& [name, t] : a.model) {
    if (!t.is_floating_point() || name.find("running_") != std::string::npos) continue;
    worst = std::max(worst, (t - b.model.at(name)).abs().max().item<double>());
  }
  return worst;
}

class DistCliTest : public limpq::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    ASSERT_TRUE(fs::exists(cli())) << "the limpq binary '" << cli() << "' is missing (set LIMPQ_CLI)";
    data_ = limpq::testing::write_synthetic_mnist(temp_path("data"), 64, 16);
  }

  // Common flags: a few steps at a small learning rate, where the run is
  // not chaotic (a 1e-7 perturbation of the weights stays far below 1e-5;
  // at lr 0.005 on this tiny problem it grows to ~3e-4 in 4 steps).
  std::vector<std::string> common(const std::string& command, const std::string& out, int64_t batch) const {
    return {command,     "--dataset", "mnist", "--root",      data_,   "--batch-size", std::to_string(batch),
            "--eval-batch-size", "16", "--workers", "1",       "--epochs", "1",        "--lr",
            "0.001",     "--warmup-epochs", "0", "--threads", "1",     "--progress",   "false",
            "--sync-bn", "true",      "--out-dir", out};
  }

  void run_one(const std::vector<std::string>& args, const std::string& log) {
    const int status = wait_for(spawn(args, log), 300);
    ASSERT_TRUE(succeeded(status)) << util::read_file(log);
  }

  void run_two(std::vector<std::string> args, const std::string& log) {
    args.insert(args.begin(), {"launch", "--nproc", "2", "--", "limpq"});
    const int status = wait_for(spawn(args, log), 300);
    ASSERT_TRUE(succeeded(status)) << util::read_file(log);
  }

  std::string data_;
};

TEST_F(DistCliTest, TwoWorkersMatchOneProcessWithTheSameGlobalBatch) {
  run_one(common("train", temp_path("one"), 16), temp_path("one.log"));
  run_two(common("train", temp_path("two"), 8), temp_path("two.log"));
  const double diff = max_parameter_difference(temp_path("one/checkpoint.pt"), temp_path("two/checkpoint.pt"));
  EXPECT_LT(diff, 1e-5);
  std::printf("full precision: 1 process (batch 16) vs 2 workers (8 each): max parameter difference %.3g\n", diff);
  EXPECT_THAT(util::read_file(temp_path("two.log")), HasSubstr("per worker x 2 workers"));
  // Only rank 0 writes: one metrics line per epoch.
  EXPECT_EQ(util::read_file(temp_path("two/metrics.jsonl")).find("\"epoch\":1"),
            util::read_file(temp_path("two/metrics.jsonl")).rfind("\"epoch\":1"));
}

TEST_F(DistCliTest, JointIndicatorStepMatchesOneProcess) {
  train::TrainConfig fp;
  fp.data.dataset("mnist").root(data_).batch_size(16).workers(1);
  fp.model.arch("resnet20");
  fp.optim.epochs(1).lr(0.05);
  fp.run.out_dir(temp_path("fp")).threads(1).progress(false);
  const std::string weights = train::run_train(fp, false).checkpoint;
  auto args = [&](const std::string& out, int64_t batch) {
    auto a = common("indicators", out, batch);
    // One joint step (every candidate, then the mixed policy, then one
    // update). The activation steps start equal to the last bit (their
    // initial mean|x| is taken in double); 8 bits, the finest rounding grid,
    // is where a last-bit difference flipped roundings before. Over more
    // steps, ulp-level differences between one batch of 16 and two of 8
    // eventually flip a rounding decision of the quantizers, and from then
    // on the runs differ by more than float noise.
    a.insert(a.end(), {"--weights", weights, "--candidates", "8,4,2", "--fraction", "1", "--limit", "16"});
    return a;
  };
  run_one(args(temp_path("one"), 16), temp_path("one.log"));
  run_two(args(temp_path("two"), 8), temp_path("two.log"));
  const double diff = max_parameter_difference(temp_path("one/checkpoint.pt"), temp_path("two/checkpoint.pt"));
  EXPECT_LT(diff, 1e-5);
  std::printf("joint indicators: 1 process vs 2 workers: max parameter difference %.3g\n", diff);
  const auto a = quant::read_indicators(temp_path("one/indicators.json"));
  const auto b = quant::read_indicators(temp_path("two/indicators.json"));
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    for (const auto& [bits, step] : a.layers[i].weight_steps) {
      EXPECT_NEAR(b.layers[i].weight_steps.at(bits), step, 1e-5 * step) << a.layers[i].name;
    }
    for (const auto& [bits, step] : a.layers[i].act_steps) {
      EXPECT_NEAR(b.layers[i].act_steps.at(bits), step, 1e-5 * step) << a.layers[i].name;
    }
  }
}

TEST_F(DistCliTest, AKilledWorkerMakesTheOtherExitWithinTheTimeout) {
  // Two workers started by hand, as a cluster launcher would.
  const std::string port = std::to_string(20000 + (::getpid() % 20000));
  auto env = [&](int rank) {
    return std::vector<std::pair<std::string, std::string>>{
        {"RANK", std::to_string(rank)}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", std::to_string(rank)},
        {"MASTER_ADDR", "127.0.0.1"},   {"MASTER_PORT", port}};
  };
  auto args = common("train", temp_path("run"), 8);
  args.insert(args.end(), {"--dist-timeout", "10"});
  args[std::find(args.begin(), args.end(), "--epochs") - args.begin() + 1] = "50";
  const pid_t rank0 = spawn(args, temp_path("rank0.log"), env(0));
  const pid_t rank1 = spawn(args, temp_path("rank1.log"), env(1));
  for (int i = 0; i < 3000 && !fs::exists(temp_path("run/config.json")); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // inside the training loop
  ::kill(rank1, SIGKILL);
  ::waitpid(rank1, nullptr, 0);
  const auto killed = std::chrono::steady_clock::now();
  const int status = wait_for(rank0, 30);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  if (status == -1) ::kill(rank0, SIGKILL);
  ASSERT_NE(status, -1) << "rank 0 hung after rank 1 died";
  EXPECT_FALSE(succeeded(status));
  const std::string log = util::read_file(temp_path("rank0.log"));
  EXPECT_THAT(log, HasSubstr("rank 1")) << log;
  EXPECT_LT(seconds, 10 + 5) << log;
  std::printf("rank 0 exited %.1f s after rank 1 was killed\n", seconds);
}

TEST_F(DistCliTest, LaunchReportsAFailingWorker) {
  auto args = common("train", temp_path("bad"), 8);
  args[std::find(args.begin(), args.end(), "--epochs") - args.begin() + 1] = "0";
  args.insert(args.begin(), {"launch", "--nproc", "2", "--", "limpq"});
  const int status = wait_for(spawn(args, temp_path("launch.log")), 120);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << util::read_file(temp_path("launch.log"));
  EXPECT_THAT(util::read_file(temp_path("launch.log")), HasSubstr("epochs must be positive"));
}

struct Socket {
  std::string local;  // as /proc/net writes it
  bool listening = false, loopback = false;
};

// The TCP sockets of the processes whose parent is `parent`, from /proc.
std::vector<Socket> tcp_sockets_of_children(pid_t parent) {
  std::set<std::string> inodes;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: the fields after the last ')'.
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator(entry.path() / "fd", ec)) {
      const std::string target = fs::read_symlink(fd.path(), ec).string();
      if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  std::vector<Socket> out;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      if (inodes.count(inode) == 0) continue;
      const std::string ip = local.substr(0, local.find(':'));
      // IPv4 127/8 (little-endian hex), ::1, and ::ffff:127/8.
      const bool loopback = (ip.size() == 8 && ip.substr(6) == "7F") || ip == "00000000000000000000000001000000" ||
                            (ip.rfind("0000000000000000FFFF0000", 0) == 0 && ip.substr(30) == "7F");
      out.push_back({local, state == "0A", loopback});  // 0A: LISTEN
    }
  }
  return out;
}

TEST_F(DistCliTest, LocalLaunchOpensNoPortOnANetworkInterface) {
  const std::vector<std::string> args = {
      "launch", "--nproc", "2", "--", "limpq", "train", "--dataset", "mnist", "--root", data_, "--batch-size", "4",
      "--eval-batch-size", "16", "--workers", "1", "--epochs", "30", "--lr", "0.001", "--warmup-epochs", "0",
      "--threads", "1", "--progress", "false", "--out-dir", temp_path("listen")};
  const pid_t launch = spawn(args, temp_path("listen.log"));
  std::set<std::string> seen, listening_exposed, exposed;
  int status = -1;
  while ((status = wait_for(launch, 0.05)) == -1) {
    for (const Socket& socket : tcp_sockets_of_children(launch)) {
      seen.insert(socket.local);
      if (!socket.loopback) (socket.listening ? listening_exposed : exposed).insert(socket.local);
    }
  }
  ASSERT_TRUE(succeeded(status)) << util::read_file(temp_path("listen.log"));
  EXPECT_TRUE(listening_exposed.empty()) << "listening beyond loopback: " << *listening_exposed.begin();
  EXPECT_TRUE(exposed.empty()) << "a socket beyond loopback: " << *exposed.begin();
  // The workers' Gloo connections (on 127.0.0.1): seeing them shows that the
  // check sees the workers' sockets at all.
  EXPECT_FALSE(seen.empty()) << "no socket of the workers was observed";
  EXPECT_THAT(util::read_file(temp_path("listen.log")), HasSubstr("no network port"));
}

}  // namespace
}  // namespace limpq::dist
