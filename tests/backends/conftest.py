"""The handmade ONNX models and image fixtures of tests/handmade.py."""
from handmade import *  # noqa: F401,F403
