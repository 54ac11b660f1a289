#!/usr/bin/env python3
"""A stock Open Inference Protocol client (NVIDIA's tritonclient, HTTP) against a
running triaged: health, metadata, and infer with JSON and binary tensors.

    python3 tests/oip/tritonclient_check.py 127.0.0.1:8080 lidc-malignancy
"""
import sys

import numpy as np
import tritonclient.http as http

url, model = sys.argv[1], sys.argv[2]
client = http.InferenceServerClient(url)
assert client.is_server_live() and client.is_server_ready(), "server not live/ready"
assert client.is_model_ready(model), "model not ready"
meta = client.get_model_metadata(model)
dim = meta["inputs"][0]["shape"][1]
k = next(o for o in meta["outputs"] if o["name"] == "probabilities")["shape"][1]
x = np.random.default_rng(0).uniform(1, 100, size=(4, dim)).astype(np.float32)
results = []
for binary in (False, True):
    inp = http.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    res = client.infer(model, [inp])
    p = res.as_numpy("probabilities")
    assert p.shape == (4, k), p.shape
    assert np.allclose(p.sum(axis=1), 1, atol=1e-4), p.sum(axis=1)
    d = res.as_numpy("disagreement")
    assert d.shape == (4,) and ((0 <= d) & (d <= 1)).all(), d
    routes = [r.decode() if isinstance(r, bytes) else r for r in res.as_numpy("route")]
    assert set(routes) <= {"automate", "review"}, routes
    results.append(p)
assert np.allclose(results[0], results[1]), "JSON and binary tensors disagree"
print(f"PASS: tritonclient {http.__name__}: live, ready, metadata, infer JSON + binary ({k} classes)")
