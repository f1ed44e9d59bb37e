/* DER_API marks the public API of libder_runtime.so. The library is compiled with -fvisibility=hidden, so
 * only what carries DER_API is exported; DER_BUILDING_LIBRARY is defined (PRIVATE) for der_runtime's own
 * sources only. C and C++. Exception classes carry it too: their typeinfo must be shared across the .so
 * boundary for a catch in the caller to match. */
#ifndef DER_EXPORT_H
#define DER_EXPORT_H

#if defined(DER_BUILDING_LIBRARY) && (defined(__GNUC__) || defined(__clang__))
#define DER_API __attribute__((visibility("default")))
/* Private members of a DER_API class, which would otherwise be exported with it. */
#define DER_LOCAL __attribute__((visibility("hidden")))
#else
#define DER_API /* a consumer: nothing to import on ELF */
#define DER_LOCAL
#endif

#endif /* DER_EXPORT_H */
