#define LIMPQ_KERNEL_NAMESPACE generic
#include "lsq_kernel_impl.h"

namespace limpq::quant::kernels {

const LsqKernels& generic_kernels() {
  static const LsqKernels kKernels{&generic::forward, &generic::backward, "generic"};
  return kKernels;
}

}  // namespace limpq::quant::kernels
