"""Write the fp32 ONNX image tower that ships with a built-in model, so the core install runs it without torch.

A built-in model's image tower may be an architecture the torch-free graph builder does not cover
(``tiny-shapes`` uses timm's ``test_resnet``), so it is exported here, once, with torch and open_clip,
checked against torch, and committed as ``searchindex/models/NAME/image.onnx`` with ``towers.json``
(the checkpoint's SHA-256 it was made from, the input it wants).  Its text tower is an open_clip text
transformer, which :mod:`searchindex.models.graphs` builds from the checkpoint at run time.

    python scripts/export_builtin_towers.py [--model tiny-shapes]

Needs the torch extra.  ``tests/test_towers.py`` checks the committed file against torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path


def export(model: str) -> Path:
    import onnx

    from searchindex.models.cache import package_version
    from searchindex.models.encoders import OpenClipEncoder
    from searchindex.models.onnx import export_graph
    from searchindex.models.spec import builtin_models, resolve_model

    folder = builtin_models()[model]
    spec = resolve_model(model)
    encoder = OpenClipEncoder(spec, device="cpu", precision="fp32")
    assert encoder.pixel_spec is not None, "a shipped tower needs a preprocessing PixelSpec describes"
    import numpy as np

    probes = np.random.default_rng(0).standard_normal((2, 3, encoder.image_size, encoder.image_size))
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "image.onnx"
        export_graph(encoder, encoder.torch_model.visual, probes.astype(np.float32), "pixels", staged)
        graph = onnx.load(str(staged))  # weights back inside the file: one file to ship
        target = folder / "image.onnx"
        onnx.save_model(graph, str(target))
    os.chmod(target, 0o644)
    facts = {
        "image": target.name,
        "image_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "checkpoint_sha256": spec.checkpoint_sha256,
        "dim": encoder.dim,
        "image_size": encoder.image_size,
        "pixel_spec": encoder.pixel_spec.to_json(),
        "made_with": {"torch": package_version("torch"), "open_clip_torch": package_version("open_clip_torch"),
                      "onnx": package_version("onnx")},
    }
    (folder / "towers.json").write_text(json.dumps(facts, indent=1) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-shapes", help="a built-in model (default: tiny-shapes)")
    args = parser.parse_args()
    path = export(args.model)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.with_name('towers.json')}")


if __name__ == "__main__":
    main()
