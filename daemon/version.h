// The build's version string, from project(VERSION) in the root CMakeLists.txt.
#pragma once

#ifndef DISTILLD_VERSION
#define DISTILLD_VERSION "0.0.0-unknown"
#endif

namespace distilld {
inline constexpr const char* kVersion = DISTILLD_VERSION;
}  // namespace distilld
