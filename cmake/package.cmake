# Installation (`cmake --install`) and the Debian package (`make deb` = cpack -G DEB).
# What goes where and why: docs/packaging.md. Included from the top-level CMakeLists.txt after the
# herald target exists.
include(GNUInstallDirs)

set(HERALD_UNIT_DIR "lib/systemd/system" CACHE STRING
    "systemd unit directory, relative to CMAKE_INSTALL_PREFIX (systemd reads /usr/lib and /usr/local/lib)")

# GNUInstallDirs puts the config of prefix /usr in /etc (the Debian package), of /opt/NAME in
# /etc/opt/NAME, of any other prefix in PREFIX/etc. Inside the prefix the destination stays
# relative (it follows `cmake --install --prefix`); outside it must be absolute.
string(FIND "${CMAKE_INSTALL_FULL_SYSCONFDIR}/" "${CMAKE_INSTALL_PREFIX}/" _in_prefix)
if(_in_prefix EQUAL 0)
    set(HERALD_CONFIG_DEST ${CMAKE_INSTALL_SYSCONFDIR}/herald)
else()
    set(HERALD_CONFIG_DEST ${CMAKE_INSTALL_FULL_SYSCONFDIR}/herald)
endif()
# Paths written into the unit and the man page: fixed when CMake configures, so choose the prefix
# with -DCMAKE_INSTALL_PREFIX (not `cmake --install --prefix`) for an install systemd will run.
set(HERALD_CONFIG_FILE ${CMAKE_INSTALL_FULL_SYSCONFDIR}/herald/herald.json)
set(HERALD_UNIT_FILE ${CMAKE_INSTALL_PREFIX}/${HERALD_UNIT_DIR}/herald.service)

# The unit: contrib/systemd/herald.service (the copy operators install by hand) with ExecStart
# pointing at the installed binary and config. Fails here if contrib's ExecStart line changes.
set(_src_unit ${CMAKE_SOURCE_DIR}/contrib/systemd/herald.service)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_src_unit})
file(READ ${_src_unit} _unit)
set(_exec "ExecStart=/usr/local/bin/herald --config /etc/herald/herald.json")
string(FIND "${_unit}" "${_exec}" _at)
if(_at LESS 0)
    message(FATAL_ERROR "cmake/package.cmake: '${_exec}' not found in ${_src_unit}")
endif()
string(REPLACE "${_exec}"
    "ExecStart=${CMAKE_INSTALL_FULL_BINDIR}/herald --config ${HERALD_CONFIG_FILE}" _unit "${_unit}")
file(WRITE ${CMAKE_BINARY_DIR}/herald.service
    "# Installed with herald ${PROJECT_VERSION} (cmake --install or the Debian package): ExecStart below\n"
    "# names the installed binary and config; the manual install steps that follow do not apply.\n"
    "${_unit}")

# The man page: docs/herald.1.in with version and paths filled in, gzipped as Debian wants.
configure_file(${CMAKE_SOURCE_DIR}/docs/herald.1.in ${CMAKE_BINARY_DIR}/herald.1 @ONLY)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/herald.1.gz
    COMMAND gzip -9nkf herald.1
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR}
    DEPENDS ${CMAKE_BINARY_DIR}/herald.1)
add_custom_target(herald_manpage ALL DEPENDS ${CMAKE_BINARY_DIR}/herald.1.gz)

install(TARGETS herald RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_BINARY_DIR}/herald.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${CMAKE_BINARY_DIR}/herald.service DESTINATION ${HERALD_UNIT_DIR})
install(FILES ${CMAKE_SOURCE_DIR}/contrib/herald.json DESTINATION ${HERALD_CONFIG_DEST})

# ---- Debian package ----------------------------------------------------------------------------
# Runtime dependencies come from dpkg-shlibdeps (dpkg-dev, and `file` for CPack to find the ELF
# files): on Debian 12 libc6, libssl3, libjansson4 and libhiredis0.14. Not libmsgpackc2: herald
# only uses msgpack-c's inline packer from the header, so the linker (--as-needed) drops the
# library and the binary does not load it.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME herald)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "herald developers <herald@localhost>" CACHE STRING "Debian Maintainer field")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "WebSocket broadcast server")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "herald holds WebSocket connections subscribed to groups and delivers
every message published over HTTP or a WebSocket stream to every subscriber
of its group, with bounded memory per connection. The package includes the
herald(1) manual, a systemd unit (not enabled on install) and an example
configuration, /etc/herald/herald.json.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
# Maintainer scripts only talk to a running systemd (daemon-reload; stop and disable on remove)
# and do nothing without one (containers, chroots). conffiles keeps local edits of the config.
file(WRITE ${CMAKE_BINARY_DIR}/deb/conffiles "${HERALD_CONFIG_FILE}\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/deb/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/deb/postinst
    ${CMAKE_SOURCE_DIR}/packaging/deb/prerm
    ${CMAKE_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
