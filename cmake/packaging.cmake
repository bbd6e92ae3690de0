# Install rules and the Debian package (cpack -G DEB). Included last from the
# root CMakeLists.txt, after every target exists.
#
#   cmake --build build && (cd build && cpack -G DEB)
#   dpkg -i distilld_<version>_<arch>.deb
#   systemctl enable --now distilld        # or distilld.socket
#
# The package installs the binary, the unit files, the sysusers.d entry, the
# example config as a conffile (/etc/distilld/distilld.yaml) and the docs. Its
# maintainer scripts create the system user and reload systemd; they never
# enable or start anything (an upgrade restarts a service that was running).
include(GNUInstallDirs)

set(DISTILLD_UNIT_DIR lib/systemd/system)

if(TARGET distilld)
  install(TARGETS distilld RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(FILES
    ${PROJECT_SOURCE_DIR}/systemd/distilld.service
    ${PROJECT_SOURCE_DIR}/systemd/distilld.socket
  DESTINATION ${DISTILLD_UNIT_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/systemd/distilld.sysusers
  DESTINATION lib/sysusers.d RENAME distilld.conf)
# The unit reads /etc/distilld/distilld.yaml whatever the prefix: absolute.
if(EXISTS ${PROJECT_SOURCE_DIR}/config/distilld.example.yaml)
  install(FILES ${PROJECT_SOURCE_DIR}/config/distilld.example.yaml
    DESTINATION /etc/distilld RENAME distilld.yaml)
  install(FILES ${PROJECT_SOURCE_DIR}/config/distilld.example.yaml
    DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
endif()
foreach(doc README.md)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${doc})
    install(FILES ${PROJECT_SOURCE_DIR}/${doc} DESTINATION ${CMAKE_INSTALL_DOCDIR})
  endif()
endforeach()
if(EXISTS ${PROJECT_SOURCE_DIR}/docs)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
    FILES_MATCHING PATTERN "*.md")
endif()

# --- CPack: one .deb ---------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME distilld)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "distilld maintainers <distilld@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "self-distilling inference server for edge machines (KServe v2)")
set(CPACK_PACKAGE_DESCRIPTION
  "distilld serves a small student network over the KServe v2 HTTP API, stores\n\
new samples durably and retrains the student in the background by knowledge\n\
distillation from a teacher, hot-swapping better versions. Runs as a hardened\n\
systemd service (Type=notify, watchdog, socket activation).")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library packages come from the binary's NEEDED entries (dpkg-shlibdeps):
# libtorch1.13, librocksdb7.8, libsqlite3-0, libyaml-cpp0.7, libssl3,
# libsystemd0, ... Named by hand: what is loaded indirectly or used at run time.
#  - libopenblas0-openmp: LibTorch links libblas.so.3 through alternatives;
#    with the reference BLAS training is ~50x slower.
#  - systemd: the units, systemd-sysusers in postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libopenblas0-openmp, systemd")
# conffiles: the admin's edits survive upgrades; postinst/prerm/postrm: see
# the comments in each.
configure_file(${PROJECT_SOURCE_DIR}/systemd/debian/conffiles
  ${CMAKE_BINARY_DIR}/debian/conffiles COPYONLY)
foreach(script postinst prerm postrm)
  file(COPY ${PROJECT_SOURCE_DIR}/systemd/debian/${script}
    DESTINATION ${CMAKE_BINARY_DIR}/debian
    FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                     WORLD_READ WORLD_EXECUTE)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_BINARY_DIR}/debian/conffiles
  ${CMAKE_BINARY_DIR}/debian/postinst
  ${CMAKE_BINARY_DIR}/debian/prerm
  ${CMAKE_BINARY_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)

# --- Tests -------------------------------------------------------------------
if(DISTILLD_BUILD_TESTS)
  # Unit files: systemd-analyze verify, and the security exposure (<= 2.0).
  add_test(NAME systemd_units_verify
    COMMAND ${PROJECT_SOURCE_DIR}/systemd/verify_units.sh ${PROJECT_SOURCE_DIR}/systemd 2.0)
  set_tests_properties(systemd_units_verify PROPERTIES LABELS "systemd;package" TIMEOUT 60)
  # Builds the .deb from this build tree (the binary must be built) and
  # checks its contents, conffiles, dependencies and maintainer scripts.
  add_test(NAME package_deb
    COMMAND ${PROJECT_SOURCE_DIR}/systemd/check_deb.sh ${CMAKE_BINARY_DIR}
            $<IF:$<TARGET_EXISTS:distilld>,yes,no>)
  set_tests_properties(package_deb PROPERTIES LABELS package TIMEOUT 600 RUN_SERIAL ON)
endif()
