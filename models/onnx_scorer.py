"""The ONNX runtime wrapper: verified loading and batched inference.

A model is loaded only when its ONNX file's sha256 equals the manifest's, the
protobuf parses, and its single input takes ``[batch, len(feature_names)]``
floats. Anything else raises :class:`~schemas.errors.ModelError` (the caller
keeps serving the previous model). Inference runs on one thread: the service
scales by processes, and extra intra-op threads only fight over the cores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import Manifest, read_manifest
from schemas.errors import ModelError, ModelIntegrityError

FloatMatrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class OnnxModel:
    """A verified model: its manifest and an inference session over exactly the hashed bytes."""

    manifest: Manifest
    session: ort.InferenceSession
    input_name: str
    output_name: str

    def predict(self, features: FloatMatrix) -> npt.NDArray[np.float64]:
        """Fraud probability for each row of a ``[n, n_features]`` float32 matrix."""
        if features.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        out = self.session.run([self.output_name], {self.input_name: features})[0]
        return np.clip(np.asarray(out, dtype=np.float64)[:, 1], 0.0, 1.0)


def load_model(model_dir: Path) -> OnnxModel:
    """Load and verify the model in ``model_dir``, or raise ModelError saying why."""
    manifest = read_manifest(model_dir)
    path = model_dir / manifest.onnx_file
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read ONNX file {path}: {exc.strerror}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.sha256:
        raise ModelIntegrityError(
            f"sha256 of {path} is {digest}, manifest says {manifest.sha256}; refusing to load"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"malformed ONNX model {path}: {exc}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    width = len(manifest.feature_names)
    shape = inputs[0].shape if len(inputs) == 1 else None
    if not shape or len(shape) != 2 or inputs[0].type != "tensor(float)" or shape[1] != width:
        shapes = [(i.name, i.type, i.shape) for i in inputs]
        raise ModelError(f"{path} takes {shapes}, manifest needs one float tensor [n, {width}]")
    probs = [o.name for o in outputs if o.name == "probabilities"] or [outputs[-1].name]
    model = OnnxModel(manifest, session, inputs[0].name, probs[0])
    try:
        model.predict(np.zeros((1, width), dtype=np.float32))
    except Exception as exc:
        raise ModelError(f"{path} fails on a probe input: {exc}") from None
    return model
