#include <gtest/gtest.h>
#include <torch/torch.h>

#include "limpq/dist/dist.h"
#include "support/test_support.h"

namespace limpq::dist {
namespace {

class SyncBatchNormTest : public limpq::testing::SeededTest {};

// With one worker the global batch is the local batch: sync_batch_norm must
// agree with torch::batch_norm in training mode, values and gradients.
TEST_F(SyncBatchNormTest, MatchesBatchNormOnOneWorker) {
  const auto x0 = torch::randn({6, 4, 5, 3}) * 3 + 1;
  const auto w0 = torch::rand({4}) + 0.5;
  const auto b0 = torch::randn({4});
  const auto up = torch::randn({6, 4, 5, 3});
  auto run = [&](bool sync) {
    auto x = x0.clone().requires_grad_(true);
    auto w = w0.clone().requires_grad_(true);
    auto b = b0.clone().requires_grad_(true);
    auto mean = torch::zeros({4});
    auto var = torch::ones({4});
    auto y = sync ? sync_batch_norm(x, w, b, mean, var, 0.1, 1e-5)
                  : torch::batch_norm(x, w, b, mean, var, /*training=*/true, 0.1, 1e-5, false);
    (y * up).sum().backward();
    return std::vector<torch::Tensor>{y.detach(), x.grad(), w.grad(), b.grad(), mean, var};
  };
  const auto ref = run(false);
  const auto got = run(true);
  const char* names[] = {"output", "dx", "dweight", "dbias", "running_mean", "running_var"};
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_TRUE(torch::allclose(got[i], ref[i], 1e-5, 1e-5)) << names[i] << "\n" << (got[i] - ref[i]).abs().max();
  }
}

TEST(DistEnvTest, ReadsTorchrunAndSlurmVariables) {
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "2", 1);
  ::setenv("LOCAL_RANK", "0", 1);
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  ::setenv("MASTER_PORT", "1234", 1);
  Env env = Env::from_environment();
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.master_addr, "10.0.0.1");
  EXPECT_EQ(env.master_port, 1234);
  ::setenv("RANK", "4", 1);
  EXPECT_THROW(Env::from_environment(), c10::Error) << "rank outside the world";
  ::setenv("RANK", "two", 1);
  EXPECT_THROW(Env::from_environment(), c10::Error);
  for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);

  ::setenv("SLURM_NTASKS", "8", 1);
  ::setenv("SLURM_PROCID", "5", 1);
  ::setenv("SLURM_LOCALID", "1", 1);
  ::setenv("SLURM_NTASKS_PER_NODE", "4", 1);
  ::setenv("SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7", 1);
  env = Env::from_environment();
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "10.0.0.7");
  for (const char* v : {"SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
                        "SLURM_LAUNCH_NODE_IPADDR"}) {
    ::unsetenv(v);
  }
  EXPECT_EQ(Env::from_environment().world_size, 1) << "no variables: one process";
}

}  // namespace
}  // namespace limpq::dist
