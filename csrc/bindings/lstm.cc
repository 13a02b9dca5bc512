#include "fusedrnn/cells/lstm.h"

#include "common.h"

namespace fusedrnn::bind {

void bind_lstm(py::module_& m) {
  static const CellSpec spec{"lstm", lstm::kGates, true,
                             [](int64_t H, int64_t P, bool proj) { return lstm::ws_width(H, P, proj); }};
  bind_cell(m, spec, true);
}

}  // namespace fusedrnn::bind
