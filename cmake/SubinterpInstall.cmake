# Installs the core library (libsubinterp.so.X.Y with its SONAME links, or
# the static libsubinterp.a when SUBINTERP_SHARED is OFF), its headers and a
# CMake package, so that a consumer writes:
#   find_package(subinterp REQUIRED)
#   target_link_libraries(app PRIVATE subinterp::core Python::Python)
include(CMakePackageConfigHelpers)

if(SUBINTERP_SHARED)
  set(SUBINTERP_CORE_KIND shared)
else()
  set(SUBINTERP_CORE_KIND static)
endif()
set(SUBINTERP_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/subinterp")

install(TARGETS subinterp_core
        EXPORT subinterpTargets
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/subinterp"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp")
install(FILES "${SUBINTERP_GENERATED_INCLUDE_DIR}/subinterp/version.hpp"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/subinterp")
install(EXPORT subinterpTargets
        NAMESPACE subinterp::
        FILE subinterpTargets.cmake
        DESTINATION "${SUBINTERP_CMAKE_DIR}")

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/subinterpConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/subinterpConfig.cmake"
  INSTALL_DESTINATION "${SUBINTERP_CMAKE_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/subinterpConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/subinterpConfig.cmake"
              "${PROJECT_BINARY_DIR}/subinterpConfigVersion.cmake"
        DESTINATION "${SUBINTERP_CMAKE_DIR}")
