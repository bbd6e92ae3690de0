// Include this instead of <doctest/doctest.h> in tests that use LibTorch.
//
// Debian's LibTorch pulls in glog, whose CHECK/CHECK_EQ/... macros would
// silently replace doctest's (a failed check would abort instead of being
// reported). Including torch first and dropping glog's names fixes the order.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LT
#undef CHECK_LE
#undef CHECK_GT
#undef CHECK_GE

#include <doctest/doctest.h>
