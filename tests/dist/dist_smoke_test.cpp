// c10d through limpq::dist in two forked processes on loopback: collectives,
// the bucketed gradient all-reduce, and SyncBatchNorm against batch norm
// over the whole batch. Needs nothing but LibTorch (with Gloo) and
// GoogleTest, so it also runs in the kernels-only build on GPU machines.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "limpq/dist/dist.h"

namespace limpq::dist {
namespace {

// The checks one worker runs; returns the number of failures.
int worker(int rank, int world) {
  init_from_environment(std::chrono::seconds(60));
  int failures = 0;
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::fprintf(stderr, "rank %d: %s\n", rank, what.c_str());
      ++failures;
    }
  };
  expect(is_distributed() && dist::rank() == rank && world_size() == world, "rank/world from the environment");

  torch::Tensor t = torch::full({5}, static_cast<float>(rank + 1));
  std::vector<torch::Tensor> one{t};
  allreduce_sum(one);
  expect(torch::equal(t, torch::full({5}, 3.0f)), "all-reduce sum");

  // Gradients: mean over workers, in place, across buckets.
  auto a = torch::zeros({3, 4}).requires_grad_(true);
  auto b = torch::zeros({7}).requires_grad_(true);
  a.mutable_grad() = torch::full({3, 4}, static_cast<float>(rank));
  b.mutable_grad() = torch::full({7}, static_cast<float>(2 * rank));
  const int64_t bytes = allreduce_gradients({a, b}, /*bucket_bytes=*/16);
  expect(bytes == (12 + 7) * 4, "all-reduced bytes");
  expect(torch::allclose(a.grad(), torch::full({3, 4}, 0.5f)) && torch::allclose(b.grad(), torch::full({7}, 1.0f)),
         "gradient mean");

  // SyncBatchNorm on each worker's half of a batch equals batch norm of the
  // whole batch, forward and backward (the loss is a mean over the batch).
  torch::manual_seed(0);
  const auto x_all = torch::randn({8, 3, 4, 4}) * 2 + 0.5;
  const auto w0 = torch::rand({3}) + 0.5;
  const auto b0 = torch::randn({3});
  const auto up_all = torch::randn({8, 3, 4, 4});
  auto xr = x_all.clone().requires_grad_(true);
  auto wr = w0.clone().requires_grad_(true);
  auto br = b0.clone().requires_grad_(true);
  auto mean_r = torch::zeros({3});
  auto var_r = torch::ones({3});
  auto yr = torch::batch_norm(xr, wr, br, mean_r, var_r, true, 0.1, 1e-5, false);
  ((yr * up_all).sum() / 8).backward();

  auto x = x_all.narrow(0, 4 * rank, 4).clone().requires_grad_(true);
  auto w = w0.clone().requires_grad_(true);
  auto bb = b0.clone().requires_grad_(true);
  auto mean = torch::zeros({3});
  auto var = torch::ones({3});
  auto y = sync_batch_norm(x, w, bb, mean, var, 0.1, 1e-5);
  ((y * up_all.narrow(0, 4 * rank, 4)).sum() / 4).backward();  // the local mean loss
  allreduce_gradients({w, bb});
  expect(torch::allclose(y, yr.detach().narrow(0, 4 * rank, 4), 1e-5, 1e-5), "SyncBatchNorm forward");
  expect(torch::allclose(x.grad() / 2, xr.grad().narrow(0, 4 * rank, 4), 1e-5, 1e-6), "SyncBatchNorm dx");
  expect(torch::allclose(w.grad(), wr.grad(), 1e-5, 1e-6) && torch::allclose(bb.grad(), br.grad(), 1e-5, 1e-6),
         "SyncBatchNorm parameter gradients");
  expect(torch::allclose(mean, mean_r, 1e-5, 1e-6) && torch::allclose(var, var_r, 1e-5, 1e-6),
         "SyncBatchNorm running statistics");
  barrier();
  return failures;
}

TEST(DistSmokeTest, TwoProcessesAgreeOnCollectivesAndSyncBatchNorm) {
  const std::string port = std::to_string(30000 + ::getpid() % 20000);
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", "2", 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      int failures = 1;
      try {
        failures = worker(rank, 2);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
      }
      std::fflush(nullptr);
      ::_exit(failures == 0 ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a worker failed (its checks are on stderr)";
  }
}

TEST(DistSmokeTest, SyncBatchNormOnTheGpuMatchesBatchNorm) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA);
  torch::manual_seed(0);
  const auto x0 = (torch::randn({6, 4, 5, 3}) * 3 + 1).to(cuda);
  const auto w0 = (torch::rand({4}) + 0.5).to(cuda);
  const auto b0 = torch::randn({4}).to(cuda);
  const auto up = torch::randn({6, 4, 5, 3}).to(cuda);
  auto run = [&](bool sync) {
    auto x = x0.clone().requires_grad_(true);
    auto w = w0.clone().requires_grad_(true);
    auto b = b0.clone().requires_grad_(true);
    auto mean = torch::zeros({4}, cuda);
    auto var = torch::ones({4}, cuda);
    auto y = sync ? sync_batch_norm(x, w, b, mean, var, 0.1, 1e-5)
                  : torch::batch_norm(x, w, b, mean, var, true, 0.1, 1e-5, false);
    (y * up).sum().backward();
    return std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad(), b.grad(), mean, var};
  };
  const auto ref = run(false);
  const auto got = run(true);
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_TRUE(torch::allclose(got[i], ref[i], 1e-4, 1e-5)) << i;
}

}  // namespace
}  // namespace limpq::dist
