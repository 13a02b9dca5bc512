// The optimiser rule from the arguments of _core.optimizer_update (optim.cc), shared with the
// device pass _core.cuda_optimizer_update (cuda_optim.cc).
#pragma once

#include <string>

#include "fusedrnn/optim.h"

namespace fusedrnn::bind {

// Raises ValueError for an unknown rule name.
fusedrnn::optim::Rule parse_rule(const std::string& rule, double lr, double scale, double momentum, bool nesterov,
                                 double beta_1, double beta_2, double epsilon, double rho, double lr_c1, double c2,
                                 double decay, double clip);

}  // namespace fusedrnn::bind
