#include "fusedrnn/cells/rnn.h"

#include "common.h"

namespace fusedrnn::bind {

void bind_rnn(py::module_& m) {
  static const CellSpec spec{"rnn", rnn::kGates, false,
                             [](int64_t H, int64_t, bool) { return rnn::ws_width(H); }};
  bind_cell(m, spec, true);
}

}  // namespace fusedrnn::bind
