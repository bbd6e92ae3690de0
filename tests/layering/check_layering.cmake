# Fails when a source file includes a project header its folder may not
# depend on: the rooms and arrows of docs/architecture.md, enforced.
# Run: cmake -DSOURCE_DIR=<repo> -P tests/layering/check_layering.cmake
cmake_minimum_required(VERSION 3.25)
#
# folder -> folders it may include from (its own is always allowed)
set(ALLOWED_common "")
set(ALLOWED_config "common")
set(ALLOWED_storage "common")
set(ALLOWED_replaybuffer "common;storage")
set(ALLOWED_learner/model "common")
set(ALLOWED_learner "common;config;storage;replaybuffer;learner/model")
set(ALLOWED_daemon/http "common")
set(ALLOWED_daemon/serving "common;storage;learner/model;daemon/http")
set(ALLOWED_daemon/api "common;config;storage;replaybuffer;learner;learner/model;daemon/http;daemon/serving")
set(ALLOWED_daemon "common;config;storage;replaybuffer;learner;learner/model;daemon/http;daemon/serving;daemon/api")
set(ALLOWED_daemon/demo "common;config;storage;replaybuffer;learner;learner/model;daemon/http;daemon/serving;daemon/api;daemon")
# Serving knows models, not training: of learner/ it sees only the
# header-only interface through which the learner hands it a version.
set(HEADERS_daemon/serving "learner/publisher.h")
# The command line (the distilld binary, not a library) also runs the demo.
set(EXTRA_daemon/main.cc "daemon/demo")
# The promotion gate is its own library without LibTorch: its files include
# common/, each other, and the header-only record types its verdict is
# stored as.
set(GATE_FILES learner/gate.h learner/gate.cc learner/eval_result.h learner/eval_result.cc)
set(GATE_HEADERS storage/evaluation.h)

set(folders common config storage replaybuffer learner/model learner daemon/http daemon/serving daemon/api daemon daemon/demo)
set(violations 0)
set(checked 0)
foreach(folder IN LISTS folders)
  file(GLOB files RELATIVE ${SOURCE_DIR} ${SOURCE_DIR}/${folder}/*.h ${SOURCE_DIR}/${folder}/*.cc)
  foreach(file IN LISTS files)
    math(EXPR checked "${checked} + 1")
    file(STRINGS ${SOURCE_DIR}/${file} includes REGEX "^#include \"[a-z_/]+\\.h\"")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^#include \"([a-z_/]+\\.h)\".*" "\\1" header "${line}")
      get_filename_component(dir ${header} DIRECTORY)
      if(file IN_LIST GATE_FILES)
        if(NOT dir STREQUAL "common" AND NOT header IN_LIST GATE_FILES AND NOT header IN_LIST GATE_HEADERS)
          message(SEND_ERROR "${file}: the gate library may not include ${header}")
          math(EXPR violations "${violations} + 1")
        endif()
        continue()
      endif()
      if(dir STREQUAL folder OR dir IN_LIST ALLOWED_${folder} OR dir IN_LIST EXTRA_${file}
         OR header IN_LIST HEADERS_${folder})
        continue()
      endif()
      message(SEND_ERROR "${file}: ${folder}/ may not include ${header}")
      math(EXPR violations "${violations} + 1")
    endforeach()
  endforeach()
endforeach()
if(checked LESS 100)
  message(FATAL_ERROR "only ${checked} files found under ${SOURCE_DIR}: wrong SOURCE_DIR?")
endif()
if(violations GREATER 0)
  message(FATAL_ERROR "${violations} include(s) break the layering")
endif()
message(STATUS "layering: ${checked} files, every include allowed")
