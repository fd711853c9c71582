#include "limpq/models/model.h"

#include <c10/util/Exception.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>

#include "limpq/models/mobilenet.h"
#include "limpq/models/resnet.h"

namespace limpq::models {

std::string ModelImpl::write_graph(nn::GraphWriter&, const std::string&) {
  TORCH_CHECK(false, "export: ", arch_, " cannot describe its graph yet");
}

std::string write_sequential_graph(nn::GraphWriter& writer, const torch::nn::Sequential& seq, std::string x) {
  for (const auto& child : seq->children()) {
    if (auto* conv = child->as<nn::QuantConv2dImpl>()) {
      x = writer.conv(*conv, x);
    } else if (auto* linear = child->as<nn::QuantLinearImpl>()) {
      x = writer.linear(*linear, x);
    } else if (auto* bn = child->as<nn::SwitchableBatchNorm2dImpl>()) {
      x = writer.batch_norm(*bn, x);
    } else if (child->as<torch::nn::ReLUImpl>()) {
      x = writer.relu(x);
    } else if (child->as<torch::nn::ReLU6Impl>()) {
      x = writer.relu6(x);
    } else if (child->as<torch::nn::DropoutImpl>()) {
      // Identity at inference.
    } else if (auto inner = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(child)) {
      x = write_sequential_graph(writer, torch::nn::Sequential(inner), x);
    } else if (auto* block = child->as<InvertedResidualImpl>()) {
      const std::string out = write_sequential_graph(writer, block->conv, x);
      x = block->use_residual ? writer.add(x, out) : out;
    } else if (auto* basic = child->as<BasicBlockImpl>()) {
      x = basic->write_graph(writer, x);
    } else if (auto* bottleneck = child->as<BottleneckImpl>()) {
      x = bottleneck->write_graph(writer, x);
    } else {
      TORCH_CHECK(false, "export: no graph form for the module ", child->name());
    }
  }
  return x;
}

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> kNames = {"resnet20", "resnet32",     "resnet56",    "resnet18",
                                                  "resnet50", "mobilenet_v1", "mobilenet_v2",
                                                  "mobilenet_v2_stem1"};
  return kNames;
}

void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() != 4) continue;
    // Not contiguous(ChannelsLast): where the input channels or the kernel
    // are 1 (a grayscale stem, 1x1 convs) NCHW strides already count as
    // channels-last and are kept, the layout stays ambiguous, and a grayscale
    // stem (input and weight both ambiguous) computes in NCHW, handing every
    // layer after it an NCHW tensor to copy. Writing the channels-last strides
    // out makes the layout explicit.
    auto nhwc = torch::empty(p.sizes(), p.options().memory_format(torch::MemoryFormat::ChannelsLast));
    p.set_data(nhwc.copy_(p.data()));
  }
}

torch::MemoryFormat memory_format_of(const torch::nn::Module& module) {
  for (const auto& p : module.parameters()) {
    if (p.dim() == 4 && p.size(1) > 1 && (p.size(2) > 1 || p.size(3) > 1)) {
      return p.is_contiguous() ? torch::MemoryFormat::Contiguous : p.suggest_memory_format();
    }
  }
  return torch::MemoryFormat::Contiguous;
}

Model make_model(const std::string& arch, int64_t in_channels, int64_t num_classes) {
  TORCH_CHECK(in_channels > 0, "model: in_channels must be positive, got ", in_channels);
  TORCH_CHECK(num_classes > 0, "model: num_classes must be positive, got ", num_classes);
  if (arch == "resnet20") return std::make_shared<CifarResNetImpl>(20, in_channels, num_classes);
  if (arch == "resnet32") return std::make_shared<CifarResNetImpl>(32, in_channels, num_classes);
  if (arch == "resnet56") return std::make_shared<CifarResNetImpl>(56, in_channels, num_classes);
  if (arch == "resnet18") return std::make_shared<ResNetImpl>(18, in_channels, num_classes);
  if (arch == "resnet50") return std::make_shared<ResNetImpl>(50, in_channels, num_classes);
  if (arch == "mobilenet_v1") return std::make_shared<MobileNetV1Impl>(in_channels, num_classes);
  if (arch == "mobilenet_v2") return std::make_shared<MobileNetV2Impl>(in_channels, num_classes);
  if (arch == "mobilenet_v2_stem1") {
    return std::make_shared<MobileNetV2Impl>(in_channels, num_classes, /*stem_stride_1=*/true);
  }
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  TORCH_CHECK(false, "model: unknown architecture '", arch, "' (known: ", known, ")");
}

}  // namespace limpq::models
