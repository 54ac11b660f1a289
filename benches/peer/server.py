"""The peer: the Python stack a team would otherwise deploy for the same network.

FastAPI + uvicorn (uvloop, httptools) + onnxruntime, serving the ONNX export of a
triaged bundle (export_onnx.py) at `POST /v1/triage` with the same request and
response shapes as triaged: pydantic validates the request, onnxruntime runs the
network (one thread per worker), the answer carries the prediction, the
uncertainty (disagreement, uvc, entropy) and a decision from the bundle's policy
rule (risk: confidence >= the certified tau; without a tau every case is
reviewed). No review queue, no idempotency, no batching across requests.

    PEER_BUNDLE=models/lidc-malignancy/1 PEER_ONNX=model.onnx \
        uvicorn server:app --workers 2 --port 8000
"""

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict

BUNDLE = Path(os.environ["PEER_BUNDLE"])
MANIFEST = json.loads((BUNDLE / "model.json").read_text())
FEATURES = MANIFEST["input"]["features"]
CLASSES = MANIFEST["classes"]
POLICY_FILE = BUNDLE / "policy.json"
POLICY = json.loads(POLICY_FILE.read_text()) if POLICY_FILE.exists() else None

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
SESSION = ort.InferenceSession(os.environ["PEER_ONNX"], options, providers=["CPUExecutionProvider"])
OUTPUTS = [o.name for o in SESSION.get_outputs()]


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Optional[str] = None
    features: Union[List[float], Dict[str, float]]


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: List[Instance]
    request_id: Optional[str] = None


def decide(probabilities):
    confidence = float(max(probabilities))
    if POLICY and POLICY["rule"]["kind"] == "risk":
        tau = POLICY["rule"]["certificate"]["tau"]
        if tau is not None and confidence >= tau:
            return {"route": "automate", "reason": f"confidence {confidence:.4f} >= certified threshold {tau:.4f}", "reason_code": "risk_certified", "reviewers": 0}
        return {"route": "review", "reason": "no certified confidence threshold covers this case", "reason_code": "risk_no_valid_threshold", "reviewers": 1}
    return {"route": "automate", "reason": "no policy", "reason_code": "automate_all_mode", "reviewers": 0}


app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/v1/triage")
def triage(req: TriageRequest):
    if not req.instances:
        raise HTTPException(422, "'instances' is empty")
    rows = []
    for i, inst in enumerate(req.instances):
        f = inst.features
        if isinstance(f, dict):
            missing = [n for n in FEATURES if n not in f]
            if missing or len(f) != len(FEATURES):
                raise HTTPException(422, f"instances[{i}].features must name {FEATURES}")
            f = [f[n] for n in FEATURES]
        if len(f) != len(FEATURES):
            raise HTTPException(422, f"instances[{i}].features has {len(f)} values; expected {len(FEATURES)}")
        rows.append(f)
    out = dict(zip(OUTPUTS, SESSION.run(None, {"features": np.asarray(rows, dtype=np.float32)})))
    results = []
    for i, inst in enumerate(req.instances):
        p = out["probabilities"][i].tolist()
        cls = int(np.argmax(out["probabilities"][i]))
        uncertainty = {
            "disagreement": float(out["disagreement"][i]),
            "uvc": 1.0 - sum(q * q for q in p),
            "entropy": -sum(q * math.log(q) for q in p if q > 0),
        }
        if "human_error" in out:
            uncertainty["human_error"] = float(out["human_error"][i])
        result = {
            "prediction": {"label": CLASSES[cls], "class": cls, "probabilities": p},
            "uncertainty": uncertainty,
            "decision": decide(p),
        }
        if inst.id is not None:
            result["id"] = inst.id
        results.append(result)
    answer = {
        "model": {"name": MANIFEST["name"], "version": MANIFEST["version"]},
        "policy": {"name": POLICY["rule"]["kind"] if POLICY else "none", "version": "peer"},
        "results": results,
    }
    if req.request_id is not None:
        answer["request_id"] = req.request_id
    return answer
