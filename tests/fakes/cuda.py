"""A fake cuda-python runtime module (``cuda.bindings.runtime``) that behaves like the real one where it matters.

Checked against cuda-bindings 13.5 on a driverless machine and the cuda-python sources/docs:
- every call returns a tuple ``(cudaError_t, value...)``; on failure the value slot is ``None``, not 0
  (``cudaGetDeviceCount()`` -> ``(cudaErrorInsufficientDriver, None)``);
- error numbers are CUDA's: InsufficientDriver 35, NoDevice 100, InvalidDevice 101;
- ``cudaDriverGetVersion()`` succeeds with 0 when no driver is installed;
- cuda-python 12.6.0-12.8.x instead *raise* ``RuntimeError("Failed to dlopen libcuda.so.1")`` from the calls
  that need the driver (``driver="dlopen"``);
- the current device is per host thread (``cudaSetDevice`` affects only the calling thread).

"Device" memory is real host memory, so copies really move bytes. Each allocation and stream remembers
the device that was current when it was made, so tests can catch work issued on the wrong GPU. Every
allocation has pages of its own, and freeing it makes them inaccessible for good (as real freed pinned memory
is unmapped): a read or write through a stale pointer or numpy view then faults at that line, instead of
scribbling on memory Python's allocator has handed out again.
"""
from __future__ import annotations

import ctypes
import enum
import threading
import types

INSUFFICIENT_DRIVER = 35


class _Pages:
    """Anonymous mmap per allocation; retired allocations stay mapped PROT_NONE (physical pages dropped), so their
    addresses are never reused and any later access faults."""

    PROT_NONE, PROT_RW, MAP_PRIVATE_ANON, MADV_DONTNEED = 0, 3, 0x22, 4

    def __init__(self):
        self._libc = None

    def _c(self):
        if self._libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long]
            for name in ("mprotect", "madvise"):
                getattr(libc, name).argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self._libc = libc
        return self._libc

    def map(self, nbytes: int) -> int:
        ptr = self._c().mmap(None, max(int(nbytes), 1), self.PROT_RW, self.MAP_PRIVATE_ANON, -1, 0)
        if ptr in (None, ctypes.c_void_p(-1).value):
            raise MemoryError(f"fake cudart: mmap of {nbytes} bytes failed (errno {ctypes.get_errno()})")
        return ptr

    def retire(self, ptr: int, nbytes: int) -> None:
        libc, size = self._c(), max(int(nbytes), 1)
        if libc.madvise(ptr, size, self.MADV_DONTNEED) or libc.mprotect(ptr, size, self.PROT_NONE):
            raise OSError(ctypes.get_errno(), "fake cudart: retiring freed memory failed")


_pages = _Pages()


class FakeCudart(types.ModuleType):
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorInsufficientDriver = INSUFFICIENT_DRIVER
        cudaErrorNoDevice = 100
        cudaErrorInvalidDevice = 101
        cudaErrorInvalidResourceHandle = 400

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class Stream:
        def __init__(self, handle):
            self.handle = handle

        def __int__(self):
            return self.handle

    def __init__(self, gpus=(("Fake GPU A", 8, 6),), *, driver: int | str = 13000, runtime: int = 13000):
        """``gpus``: (name, major, minor) per device. ``driver``: the CUDA version the driver supports
        (e.g. 12040), 0 for "no driver installed", or "dlopen" for old cuda-python without a driver."""
        super().__init__("fake_cudart")
        self.gpus = list(gpus)
        self.driver, self.runtime = driver, runtime
        self.device: dict[int, int] = {}  # live allocations: pointer -> size in bytes
        self.host: dict[int, int] = {}
        self.owner: dict[int, int] = {}  # device pointer or stream handle -> device it belongs to
        self.streams: set[int] = set()
        self.copies: list[tuple[str, int]] = []
        self.syncs = 0
        self._thread = threading.local()
        self._next_stream = 4242

    ok = property(lambda self: self.cudaError_t.cudaSuccess)

    # --- driver state ------------------------------------------------------------------------
    def _driver_error(self):
        """None when the driver can run this runtime; else the error code (or a raise, like cuda-python 12.6-12.8)."""
        if self.driver == "dlopen":
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        if not self.driver or self.driver < self.runtime // 1000 * 1000:
            return self.cudaError_t.cudaErrorInsufficientDriver
        return None

    def current(self) -> int:
        return getattr(self._thread, "device", 0)

    def cudaGetDeviceCount(self):
        err = self._driver_error()
        if err is not None:
            return (err, None)
        if not self.gpus:
            return (self.cudaError_t.cudaErrorNoDevice, None)
        return (self.ok, len(self.gpus))

    def cudaDriverGetVersion(self):
        if self.driver == "dlopen":
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return (self.ok, int(self.driver or 0))

    def cudaRuntimeGetVersion(self):
        return (self.ok, self.runtime)

    def cudaGetDeviceProperties(self, device):
        err = self._driver_error()
        if err is not None:
            return (err, None)
        if not 0 <= device < len(self.gpus):
            return (self.cudaError_t.cudaErrorInvalidDevice, None)
        name, major, minor = self.gpus[device]
        return (self.ok, types.SimpleNamespace(name=name.encode() + b"\x00" * 8, major=major, minor=minor,
                                               totalGlobalMem=1 << 34))

    def cudaSetDevice(self, device):
        err = self._driver_error()
        if err is not None:
            return (err,)
        if not 0 <= device < len(self.gpus):
            return (self.cudaError_t.cudaErrorInvalidDevice,)
        self._thread.device = device
        return (self.ok,)

    def cudaGetDevice(self):
        return (self.ok, self.current())

    def cudaGetErrorName(self, err):
        return (self.ok, self.cudaError_t(err).name.encode())

    # --- memory and streams ------------------------------------------------------------------
    def _alloc(self, table, nbytes):
        ptr = _pages.map(nbytes)
        table[ptr] = nbytes
        self.owner[ptr] = self.current()
        return (self.ok, ptr)

    def cudaMalloc(self, nbytes):
        return self._alloc(self.device, nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc(self.host, nbytes)

    @staticmethod
    def _free(table, ptr):
        nbytes = table.pop(ptr, None)
        if nbytes is None:
            return (FakeCudart.cudaError_t.cudaErrorInvalidValue,)
        _pages.retire(ptr, nbytes)
        return (FakeCudart.cudaError_t.cudaSuccess,)

    def cudaFree(self, ptr):
        return self._free(self.device, ptr)

    def cudaFreeHost(self, ptr):
        return self._free(self.host, ptr)

    def cudaStreamCreate(self):
        s = self.Stream(self._next_stream)
        self._next_stream += 1
        self.streams.add(s.handle)
        self.owner[s.handle] = self.current()
        return (self.ok, s)

    def cudaStreamDestroy(self, stream):
        self.streams.discard(int(stream))
        return (self.ok,)

    def cudaStreamSynchronize(self, stream):
        self.syncs += 1
        return (self.ok,)

    @staticmethod
    def _fits(table, ptr, nbytes):
        return ptr in table and nbytes <= table[ptr]

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        # CUDA lets a copy go to a stream of another device (unified addressing); kernels are what fail.
        h2d = kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice
        dst_t, src_t = (self.device, self.host) if h2d else (self.host, self.device)
        if not (self._fits(dst_t, dst, nbytes) and self._fits(src_t, src, nbytes)) or int(stream) not in self.streams:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        ctypes.memmove(dst, src, nbytes)
        self.copies.append(("h2d" if h2d else "d2h", nbytes))
        return (self.ok,)

    def is_device_buffer(self, ptr: int, nbytes: int) -> bool:
        """Whether ``ptr`` starts a live cudaMalloc allocation of at least ``nbytes`` (what a kernel may touch)."""
        return self._fits(self.device, ptr, nbytes)

    def launch_error(self, stream_handle: int) -> str | None:
        """What a kernel launch on ``stream_handle`` from this thread would fail with (None: it runs)."""
        if int(stream_handle) not in self.streams:
            return "invalid resource handle (unknown stream)"
        if self.owner.get(int(stream_handle)) != self.current():
            return (f"invalid resource handle (stream of device {self.owner.get(int(stream_handle))} used while "
                    f"device {self.current()} is current in this thread)")
        return None
