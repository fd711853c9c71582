#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <cstdlib>

#include "limpq/models/model.h"
#include "limpq/models/state_dict.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::models {
namespace {

// Logits of torchvision models (exported by tests/tools/export_torchvision.py
// through the ctest fixture) reproduced by limpq within 1e-4.
class TorchvisionParityTest : public limpq::testing::SeededTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(TorchvisionParityTest, SameLogitsAsPyTorch) {
  const char* dir = std::getenv("LIMPQ_TORCHVISION_DIR");
  ASSERT_NE(dir, nullptr) << "run through ctest: the torchvision_export fixture sets LIMPQ_TORCHVISION_DIR";
  const std::string name = GetParam();
  auto model = make_model(name, 3, 10);
  const std::string weights = std::string(dir) + "/" + name + ".pt";
  load_state_dict(*model, read_state_dict_file(weights), weights);
  const std::string io_path = std::string(dir) + "/" + name + "_io.pt";
  const std::string bytes = util::read_file(io_path);
  auto io = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
  auto input = io.at("input").toTensor();
  auto expected = io.at("logits").toTensor();
  model->eval();
  torch::NoGradGuard no_grad;
  auto logits = model->forward(input);
  const double max_diff = (logits - expected).abs().max().item<double>();
  EXPECT_LT(max_diff, 1e-4) << name << " logits differ from PyTorch by " << max_diff;
}

INSTANTIATE_TEST_SUITE_P(Torchvision, TorchvisionParityTest, ::testing::Values("resnet18", "mobilenet_v2"));

}  // namespace
}  // namespace limpq::models
