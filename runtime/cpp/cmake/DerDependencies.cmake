# Third-party dependencies of der_runtime, each as one imported target:
#   der::onnxruntime  ONNX Runtime C/C++ SDK from ONNXRUNTIME_ROOT (include/onnxruntime_cxx_api.h, lib/libonnxruntime.so)
#   der::codecs       libjpeg(-turbo), libpng (required); libwebp, libtiff, giflib (when found: DER_HAVE_*);
#                     EXIF is parsed in src/image (no libexif), see src/image/README.md
#   der::tensorrt     TensorRT (nvinfer) + CUDA runtime, only when DER_WITH_TENSORRT is ON or AUTO and found
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
# Keep the symlink path: the SDK's lib/ may point at the Python wheel's library (scripts/ort_sdk.sh).
set_target_properties(der::onnxruntime PROPERTIES IMPORTED_NO_SONAME FALSE)

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
find_path(DER_GIF_INCLUDE gif_lib.h)
find_library(DER_GIF_LIBRARY gif)
if(DER_GIF_INCLUDE AND DER_GIF_LIBRARY)
  target_include_directories(der::codecs INTERFACE "${DER_GIF_INCLUDE}")
  target_link_libraries(der::codecs INTERFACE "${DER_GIF_LIBRARY}")
  target_compile_definitions(der::codecs INTERFACE DER_HAVE_GIF=1)
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
