# Install rules so that downstream projects can find_package(moerun) and link moerun::moerun.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS moerun EXPORT moerun-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/moerun DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT moerun-targets NAMESPACE moerun:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/moerun)
configure_package_config_file(cmake/moerun-config.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/moerun-config.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/moerun)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/moerun-config-version.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/moerun-config.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/moerun-config-version.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/moerun)
if(MOERUN_BUILD_TOOLS)
  install(TARGETS moerun_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
