# Third-party dependencies of der_runtime, each as one imported target:
#   der::onnxruntime  ONNX Runtime C/C++ SDK from ONNXRUNTIME_ROOT (include/onnxruntime_cxx_api.h, lib/libonnxruntime.so)
#   der::codecs       libjpeg(-turbo), libpng (required); libwebp, libtiff (when found: DER_HAVE_*); GIF and EXIF
#                     are parsed in src/image (no giflib, no libexif), see src/image/README.md
#   der::tensorrt     TensorRT (nvinfer) + CUDA runtime, only when DER_WITH_TENSORRT is ON or AUTO and found
#   openvino::runtime OpenVINO C++ runtime (the pip wheel's SDK), only when DER_WITH_OPENVINO is ON or AUTO and found
#   nlohmann_json::nlohmann_json, Threads::Threads
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(PkgConfig REQUIRED)

# --- ONNX Runtime ---------------------------------------------------------------------------------------------------
if(NOT ONNXRUNTIME_ROOT AND EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/../../build/deps/onnxruntime/include")
  get_filename_component(ONNXRUNTIME_ROOT "${CMAKE_CURRENT_SOURCE_DIR}/../../build/deps/onnxruntime" ABSOLUTE)
endif()
find_path(DER_ORT_INCLUDE onnxruntime_cxx_api.h
          HINTS "${ONNXRUNTIME_ROOT}/include" "${ONNXRUNTIME_ROOT}/include/onnxruntime/core/session" NO_DEFAULT_PATH)
find_library(DER_ORT_LIBRARY NAMES onnxruntime HINTS "${ONNXRUNTIME_ROOT}/lib" "${ONNXRUNTIME_ROOT}/lib64" NO_DEFAULT_PATH)
if(NOT DER_ORT_INCLUDE OR NOT DER_ORT_LIBRARY)
  message(FATAL_ERROR "ONNX Runtime SDK not found (ONNXRUNTIME_ROOT='${ONNXRUNTIME_ROOT}'): pass "
          "-DONNXRUNTIME_ROOT=DIR with DIR/include/onnxruntime_cxx_api.h and DIR/lib/libonnxruntime.so (an official "
          "onnxruntime-linux-x64-<version> release), or run scripts/ort_sdk.sh")
endif()
get_filename_component(DER_ORT_LIBDIR "${DER_ORT_LIBRARY}" DIRECTORY)
add_library(der::onnxruntime SHARED IMPORTED)
set_target_properties(der::onnxruntime PROPERTIES IMPORTED_LOCATION "${DER_ORT_LIBRARY}"
                      INTERFACE_INCLUDE_DIRECTORIES "${DER_ORT_INCLUDE}")

# --- image codecs ---------------------------------------------------------------------------------------------------
add_library(der::codecs INTERFACE IMPORTED)
find_package(JPEG REQUIRED)
find_package(PNG REQUIRED)
target_link_libraries(der::codecs INTERFACE JPEG::JPEG PNG::PNG)
pkg_check_modules(DER_WEBP IMPORTED_TARGET libwebp libwebpdemux)
if(DER_WEBP_FOUND)
  target_link_libraries(der::codecs INTERFACE PkgConfig::DER_WEBP)
  target_compile_definitions(der::codecs INTERFACE DER_HAVE_WEBP=1)
endif()
pkg_check_modules(DER_TIFF IMPORTED_TARGET libtiff-4)
if(DER_TIFF_FOUND)
  target_link_libraries(der::codecs INTERFACE PkgConfig::DER_TIFF)
  target_compile_definitions(der::codecs INTERFACE DER_HAVE_TIFF=1)
endif()

# --- TensorRT + CUDA runtime (optional) -----------------------------------------------------------------------------
set(DER_TENSORRT_ENABLED OFF)
if(NOT DER_WITH_TENSORRT STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  find_path(DER_TRT_INCLUDE NvInferRuntime.h HINTS "${TENSORRT_ROOT}/include" PATH_SUFFIXES x86_64-linux-gnu)
  find_library(DER_TRT_LIBRARY NAMES nvinfer nvinfer_10 HINTS "${TENSORRT_ROOT}/lib")
  if(DER_TRT_INCLUDE AND DER_TRT_LIBRARY AND CUDAToolkit_FOUND)
    set(DER_TENSORRT_ENABLED ON)
    add_library(der::tensorrt INTERFACE IMPORTED)
    target_include_directories(der::tensorrt INTERFACE "${DER_TRT_INCLUDE}")
    target_link_libraries(der::tensorrt INTERFACE "${DER_TRT_LIBRARY}" CUDA::cudart)
  elseif(DER_WITH_TENSORRT STREQUAL "ON")
    message(FATAL_ERROR "DER_WITH_TENSORRT=ON but TensorRT (NvInferRuntime.h, libnvinfer) or the CUDA toolkit was "
            "not found; set TENSORRT_ROOT=DIR (include/ + lib/) and CUDAToolkit_ROOT, or use DER_WITH_TENSORRT=OFF")
  endif()
endif()

# --- OpenVINO (optional): the pip wheel's C++ SDK, -DOpenVINO_DIR=<site-packages>/openvino/cmake ----------------------
set(DER_OPENVINO_ENABLED OFF)
set(DER_OV_LIBDIR "")
if(NOT DER_WITH_OPENVINO STREQUAL "OFF")
  find_package(OpenVINO QUIET COMPONENTS Runtime)
  if(OpenVINO_FOUND AND TARGET openvino::runtime)
    set(DER_OPENVINO_ENABLED ON)
    # The wheel's libs/ folder: libopenvino.so and the CPU plugin it loads from beside itself (rpath, as for ORT).
    get_target_property(_der_ov_lib openvino::runtime IMPORTED_LOCATION_RELEASE)
    if(NOT _der_ov_lib)
      get_target_property(_der_ov_lib openvino::runtime IMPORTED_LOCATION)
    endif()
    get_filename_component(DER_OV_LIBDIR "${_der_ov_lib}" DIRECTORY)
  elseif(DER_WITH_OPENVINO STREQUAL "ON")
    message(FATAL_ERROR "DER_WITH_OPENVINO=ON but OpenVINO was not found; pip install openvino and pass "
            "-DOpenVINO_DIR=<site-packages>/openvino/cmake (scripts/cpp_build.sh does it from .venv), or use "
            "DER_WITH_OPENVINO=OFF")
  endif()
endif()
