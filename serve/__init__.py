"""Serving with Triton, one package: ``repository`` writes a model repository from an engine, ``models`` are the
Python-backend models it generates, ``server`` runs tritonserver (``install`` finds or unpacks one), ``client``
queries it like a Predictor (der-infer --triton) and ``load`` is der-serve's loopback load generator."""
