"""Thin click entry points. Heavy imports (torch, tensorrt) happen inside commands so --help is instant."""
