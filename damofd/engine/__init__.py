"""The application layer: runners that drive several stages end to end.

* :mod:`damofd.engine.wider_eval` — ``damofd eval``: build a detector (zoo name, checkpoint,
  ONNX file, ModelScope id), optionally export it to ONNX, run it over a WIDER FACE split and
  score the predictions with :mod:`damofd.evaluation`.
* :mod:`damofd.engine.ray` — ``damofd detect --engine ray`` and
  :func:`~damofd.engine.ray.detect_dataset` (Ray Data).
* :mod:`damofd.engine.ray_cli` — ``damofd detect --engine ray`` (start Ray, resume, write).
* :mod:`damofd.engine.build` — the detector a set of ``damofd detect`` options describes.
* :mod:`damofd.engine.wider_predictions` — the prediction files of a ``damofd eval`` run.
* :mod:`damofd.engine.eval_model` — the detector, label and identity of a ``damofd eval`` run.
* :mod:`damofd.engine.inputs` — input expansion, detection records, output names.

The stages below never import this package (tests/test_import_graph.py; docs/architecture.md).
"""
