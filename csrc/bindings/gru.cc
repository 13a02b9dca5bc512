#include "fusedrnn/cells/gru.h"

#include "common.h"

namespace fusedrnn::bind {

void bind_gru(py::module_& m) {
  static const CellSpec spec{"gru", gru::kGates, false,
                             [](int64_t H, int64_t, bool) { return gru::ws_width(H); }};
  bind_cell(m, spec, false);
}

}  // namespace fusedrnn::bind
