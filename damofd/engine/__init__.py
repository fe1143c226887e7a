"""The application layer: runners that drive several stages end to end.

* :mod:`damofd.engine.wider_eval` — ``damofd eval``: build a detector (zoo name, checkpoint,
  ONNX file, ModelScope id), optionally export it to ONNX, run it over a WIDER FACE split and
  score the predictions with :mod:`damofd.evaluation`.

The stages below never import this package (tests/test_import_graph.py; docs/architecture.md).
"""
