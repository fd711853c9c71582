#include "limpq/models/model.h"

#include <c10/util/Exception.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>

#include <filesystem>

#include "limpq/models/mobilenet.h"
#include "limpq/models/onnx_model.h"
#include "limpq/models/resnet.h"
#include "limpq/models/state_dict.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"

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

namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out;
  for (int64_t d : s) out += (out.empty() ? "" : "x") + std::to_string(d);
  return out;
}

// An imported network fixes its input and class count; the data must fit.
void check_data_fits(const OnnxModelImpl& model, const std::vector<int64_t>& input_shape, int64_t num_classes) {
  const auto& want = model.input_shape();
  TORCH_CHECK(input_shape == want, "model: '", model.source(), "' takes ", shape_text(want),
              " input but the data gives ", shape_text(input_shape), "; adapt the data with data.channels: ", want[0],
              " and data.image_size: ", want[1], " (--channels ", want[0], " --image-size ", want[1], ")",
              want[1] != want[2] ? ", or export the network for a square input" : "");
  TORCH_CHECK(model.num_classes() == num_classes, "model: '", model.source(), "' has ", model.num_classes(),
              " outputs but the data has ", num_classes, " classes; export the network with ", num_classes,
              " classes (e.g. torchvision's num_classes=", num_classes, ")");
}

}  // namespace

namespace {

// A file an option names must exist before anything is built or written.
void check_file_option(const std::string& path, const char* key, const char* flag) {
  if (path.empty() || util::file_exists(path)) return;
  std::error_code ec;
  const std::string cwd = std::filesystem::current_path(ec).string();
  TORCH_CHECK(false, "model: ", key, " (", flag, ") names '", path, "', which does not exist",
              std::filesystem::path(path).is_relative() && !ec ? " (relative to the working directory '" + cwd + "')"
                                                                : std::string());
}

}  // namespace

ModelOptions resolve_model_options(ModelOptions options) {
  check_file_option(options.onnx(), "model.onnx", "--onnx");
  check_file_option(options.weights(), "model.weights", "--weights");
  if (options.onnx().empty()) {
    TORCH_CHECK(options.arch() != kOnnxArch, "model: arch 'onnx' needs the file: set model.onnx (--onnx FILE)");
    return options.arch().empty() ? options.arch(kDefaultArch) : options;
  }
  TORCH_CHECK(options.arch().empty() || options.arch() == kOnnxArch,
              "model: model.onnx (--onnx) and model.arch (--arch) exclude each other; got onnx '", options.onnx(),
              "' and arch '", options.arch(), "': drop the arch");
  return options.arch(kOnnxArch);
}

WeightsTarget weights_target(const ModelOptions& given) {
  const ModelOptions options = resolve_model_options(given);
  if (options.onnx().empty()) return {options.arch(), "", ""};
  return {kOnnxArch, options.onnx(), util::Crc32().update(util::read_file(options.onnx())).str()};
}

Model build_model(const ModelOptions& given, const std::vector<int64_t>& input_shape, int64_t num_classes) {
  const ModelOptions options = resolve_model_options(given);
  TORCH_CHECK(input_shape.size() == 3, "model: input shape must be C,H,W, got ", shape_text(input_shape));
  Model model;
  WeightsTarget target{options.arch(), "", ""};
  if (options.onnx().empty()) {
    model = make_model(options.arch(), input_shape[0], num_classes);
  } else {
    OnnxModel imported = import_onnx(options.onnx());
    check_data_fits(*imported, input_shape, num_classes);
    target = {kOnnxArch, imported->source(), imported->checksum()};
    model = imported;
  }
  if (!options.weights().empty()) {
    load_state_dict(*model, read_weights_for(options.weights(), target), options.weights());
  }
  return model;
}

}  // namespace limpq::models
