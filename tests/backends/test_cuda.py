"""backends/tensorrt/cuda.py against a fake that behaves like cuda-python (see tests/fakes/cuda.py) and, where
installed, the real cuda-python on this machine (CI has no NVIDIA driver: the driverless path is then the real one)."""
from __future__ import annotations

import importlib.util
import threading

import pytest

from der_deploy.errors import BackendUnavailable
from der_deploy.backends.tensorrt import cuda

from fakes.cuda import FakeCudart


@pytest.fixture
def use(monkeypatch):
    def install(fake):
        monkeypatch.setattr(cuda, "_cudart", fake)
        return fake
    return install


def test_old_cuda_python_raising_runtime_error_means_no_gpu(use):
    use(FakeCudart(driver="dlopen", runtime=12080))  # cuda-python 12.6.0-12.8.x on a driverless machine
    assert cuda.gpu_count() == 0 and cuda.list_gpus() == []
    assert cuda.no_gpu_reason() == "Failed to dlopen libcuda.so.1"
    assert cuda.no_gpu_message().startswith("no NVIDIA driver is installed (Failed to dlopen libcuda.so.1)")
    assert cuda.versions() == {"runtime": "12.8"}  # no driver key: the driver query raised


def test_error_value_is_none_not_zero(use):
    fake = use(FakeCudart(gpus=[]))
    assert fake.cudaGetDeviceCount() == (fake.cudaError_t.cudaErrorNoDevice, None)
    assert cuda.gpu_count() == 0 and cuda.no_gpu_reason() == "cudaErrorNoDevice"
    with pytest.raises(BackendUnavailable, match=r"^no CUDA GPU is visible \(cudaErrorNoDevice\)"):
        cuda.gpu_info(0)


@pytest.mark.parametrize("driver, runtime, want, cu12", [
    (12040, 13000, "the NVIDIA driver is too old for CUDA 13.0: it supports CUDA 12.4 (cudaErrorInsufficientDriver)", True),
    (11080, 12060, "the NVIDIA driver is too old for CUDA 12.6: it supports CUDA 11.8 (cudaErrorInsufficientDriver)", False),
    (0, 13000, "no NVIDIA driver is installed (cudaErrorInsufficientDriver)", False),
])
def test_insufficient_driver_is_translated(use, driver, runtime, want, cu12):
    use(FakeCudart(driver=driver, runtime=runtime))
    assert int(cuda.load_cudart().cudaError_t.cudaErrorInsufficientDriver) == 35
    msg = cuda.no_gpu_message()
    assert msg.startswith(want) and ("der-deploy[trt-cu12]" in msg) == cu12
    with pytest.raises(BackendUnavailable) as info:
        cuda.gpu_info(0)
    assert str(info.value) == msg


def test_current_device_is_per_thread(use):
    fake = use(FakeCudart(gpus=[("A", 8, 0), ("B", 9, 0)]))
    cuda.set_device(1)
    seen = []
    t = threading.Thread(target=lambda: seen.append(fake.current()))
    t.start()
    t.join()
    assert fake.current() == 1 and seen == [0]
    assert [g.name for g in cuda.list_gpus()] == ["A", "B"]


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python not installed")
def test_real_cuda_python_never_raises_here():
    monkey_free = cuda._cudart
    try:
        cuda._cudart = None
        try:
            cuda.load_cudart()
        except BackendUnavailable:
            pytest.skip("cuda-python is installed but cannot load")
        n = cuda.gpu_count()
        vers = cuda.versions()
        if n:
            assert cuda.list_gpus() and "driver" in vers
        else:
            msg = cuda.no_gpu_message()
            assert msg and "\n" not in msg
            if "driver" not in vers:  # driverless machine (CI): CUDA's own answer is InsufficientDriver
                assert msg.startswith("no NVIDIA driver is installed")
    finally:
        cuda._cudart = monkey_free
