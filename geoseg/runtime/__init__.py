"""The model/engine seam: model sources -> one contract -> an engine (torch or ONNX Runtime).

* :mod:`geoseg.runtime.contract`: :class:`ModelContract`, the checks of a scene against it
  (bands, dtype, pixel size, reflectance scaling).
* :mod:`geoseg.runtime.engines`: :class:`Engine` (normalised batch -> class probabilities),
  :class:`TorchEngine`, :class:`OrtEngine`.
* :mod:`geoseg.runtime.sources`: :func:`load` (bundle, geoseg ONNX, Deepness ONNX, csmask
  names) and the registry of models available offline.

``geoseg.predict`` runs whatever :func:`load` returns inside its one streamed pass.
"""

from __future__ import annotations

__all__ = ["contract", "engines", "sources"]
