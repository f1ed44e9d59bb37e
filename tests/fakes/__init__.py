"""Fakes of the GPU libraries der-deploy drives, for tests on machines without an NVIDIA GPU.

``fakes.cuda``: cuda-python's runtime module (``FakeCudart``); ``fakes.tensorrt``: one ``tensorrt`` module with
the builder and the runtime side (``fake_tensorrt``), plus plan files it can load (``make_fake_plan``).
Each module's docstring says what was checked against the real library.
"""
