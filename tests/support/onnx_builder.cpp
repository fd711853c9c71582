#include "support/onnx_builder.h"

#include <c10/util/Exception.h>

#ifdef LIMPQ_WITH_ONNX

#include <onnx/onnx_pb.h>
#include <torch/torch.h>

namespace limpq::testing {
namespace {

void set_tensor(onnx::TensorProto* t, const std::string& name, const torch::Tensor& value) {
  t->set_name(name);
  const torch::Tensor v = value.contiguous().to(torch::kCPU);
  for (int64_t d : v.sizes()) t->add_dims(d);
  switch (v.scalar_type()) {
    case torch::kFloat32: t->set_data_type(onnx::TensorProto_DataType_FLOAT); break;
    case torch::kInt64: t->set_data_type(onnx::TensorProto_DataType_INT64); break;
    case torch::kBool: t->set_data_type(onnx::TensorProto_DataType_BOOL); break;
    default: TORCH_CHECK(false, "onnx builder: type ", v.scalar_type(), " is not handled");
  }
  t->set_raw_data(v.data_ptr(), static_cast<size_t>(v.nbytes()));
}

void set_attribute(onnx::NodeProto* node, const std::string& name, const OnnxAttribute& value) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  if (const auto* i = std::get_if<int64_t>(&value)) {
    a->set_type(onnx::AttributeProto_AttributeType_INT);
    a->set_i(*i);
  } else if (const auto* f = std::get_if<double>(&value)) {
    a->set_type(onnx::AttributeProto_AttributeType_FLOAT);
    a->set_f(static_cast<float>(*f));
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    a->set_type(onnx::AttributeProto_AttributeType_STRING);
    a->set_s(*s);
  } else if (const auto* is = std::get_if<std::vector<int64_t>>(&value)) {
    a->set_type(onnx::AttributeProto_AttributeType_INTS);
    for (int64_t x : *is) a->add_ints(x);
  } else {
    a->set_type(onnx::AttributeProto_AttributeType_FLOATS);
    for (double x : std::get<std::vector<double>>(value)) a->add_floats(static_cast<float>(x));
  }
}

void set_float_type(onnx::ValueInfoProto* v, const std::string& name, const std::vector<std::string>& dims) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  for (const auto& d : dims) {
    auto* dim = t->mutable_shape()->add_dim();
    if (std::isdigit(static_cast<unsigned char>(d[0]))) {
      dim->set_dim_value(std::stoll(d));
    } else {
      dim->set_dim_param(d);
    }
  }
}

}  // namespace

bool onnx_builder_available() { return true; }

std::string OnnxGraphBuilder::flattened(const std::string& value) const {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("limpq tests");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(opset_);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("single_node");
  std::vector<std::string> dims = {"N"};
  for (int64_t d : chw_) dims.push_back(std::to_string(d));
  set_float_type(g->add_input(), "input", dims);
  for (const auto& [name, tensor] : initializers_) set_tensor(g->add_initializer(), name, tensor);
  int k = 0;
  for (const auto& n : nodes_) {
    onnx::NodeProto* node = g->add_node();
    node->set_op_type(n.op);
    node->set_name("/" + n.op + "_" + std::to_string(k++));
    for (const auto& in : n.inputs) node->add_input(in);
    for (const auto& out : n.outputs) node->add_output(out);
    for (const auto& [name, a] : n.attributes) set_attribute(node, name, a);
  }
  onnx::NodeProto* flatten = g->add_node();
  flatten->set_op_type("Flatten");
  flatten->set_name("/Flatten");
  flatten->add_input(value);
  flatten->add_output("logits");
  set_attribute(flatten, "axis", int64_t{1});
  set_float_type(g->add_output(), "logits", {"N", "M"});
  std::string bytes;
  TORCH_CHECK(model.SerializeToString(&bytes), "onnx builder: could not serialise");
  return bytes;
}

}  // namespace limpq::testing

#else  // !LIMPQ_WITH_ONNX

namespace limpq::testing {
bool onnx_builder_available() { return false; }
std::string OnnxGraphBuilder::flattened(const std::string&) const {
  TORCH_CHECK(false, "onnx builder: built without libonnx");
}
}  // namespace limpq::testing

#endif

namespace limpq::testing {

OnnxGraphBuilder::OnnxGraphBuilder(int64_t opset, std::vector<int64_t> chw) : opset_(opset), chw_(std::move(chw)) {}

OnnxGraphBuilder& OnnxGraphBuilder::initializer(const std::string& name, const torch::Tensor& value) {
  initializers_.emplace_back(name, value);
  return *this;
}

OnnxGraphBuilder& OnnxGraphBuilder::node(const std::string& op, std::vector<std::string> inputs,
                                         std::vector<std::string> outputs,
                                         std::map<std::string, OnnxAttribute> attributes) {
  nodes_.push_back({op, std::move(inputs), std::move(outputs), std::move(attributes)});
  return *this;
}

}  // namespace limpq::testing
