"""Speed and memory of the face engine (searchindex[faces]) on 12 MP photos, per detector.

Makes 4000 x 3000 photos from face photos that ship in packages (scikit-image's astronaut and
matplotlib's Grace Hopper, pasted large and small into an enlarged face-free package photo), then,
for each detector in a fresh process (so peak memory is that detector's): seconds per photo for
detection + landmarks + embeddings (the photo already decoded; the median of --rounds), the faces
found, the 128-d embeddings per second (aligned faces through dlib's ResNet, without detection),
model load time, and the process's peak resident memory.  Prints JSON (``--json FILE`` writes it too).

    python scripts/bench_faces.py --detectors hog,cnn --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_photo(seed: int = 0) -> Any:
    """A 4000 x 3000 RGB photo with two large and two small faces."""
    import matplotlib.cbook
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    scene = Image.fromarray(skimage.data.coffee()).resize((4000, 3000), Image.Resampling.BICUBIC)
    astronaut = Image.fromarray(skimage.data.astronaut()).crop((110, 0, 340, 250))
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    hopper = hopper.crop((100, 50, 450, 420))
    for face, side, x in ((astronaut, 900, 300), (hopper, 900, 1500), (astronaut, 420, 2700), (hopper, 420, 3300)):
        scale = side / face.width
        face = face.resize((side, int(face.height * scale)))
        scene.paste(face, (x, int(rng.integers(200, 3000 - face.height - 100))))
    return scene


def run_one(detector: str, rounds: int, embed_n: int) -> dict[str, Any]:
    """Time one detector in this process."""
    import dlib
    import numpy as np

    from searchindex.models.faces import DETECT_SIDE, FaceEngine

    photo = make_photo()
    engine = FaceEngine(detector)
    t0 = time.perf_counter()
    engine._load()
    load_s = time.perf_counter() - t0
    times, found = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        faces = engine.faces(photo)
        times.append(time.perf_counter() - t0)
        found = len(faces)
    # Embedding alone: the same aligned faces again and again (detection excluded).
    _, shape, embed = engine._load()
    full = np.asarray(photo)
    shapes = [shape(full, dlib.rectangle(f.box[0], f.box[1], f.box[0] + f.box[2], f.box[1] + f.box[3]))
              for f in faces] if faces else []
    embed_s = None
    if shapes:
        t0 = time.perf_counter()
        for i in range(embed_n):
            embed.compute_face_descriptor(full, shapes[i % len(shapes)], 0)
        embed_s = (time.perf_counter() - t0) / embed_n
    return {
        "detector": detector, "detect_side": DETECT_SIDE, "photo": "4000x3000", "rounds": rounds,
        "s_per_photo": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times],
        "faces_found": found, "faces_planted": 4, "load_s": round(load_s, 3),
        "embeddings_per_s": round(1 / embed_s, 1) if embed_s else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detectors", default="hog,cnn", help="comma-separated: hog, cnn")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs per detector (median reported)")
    ap.add_argument("--embed-n", type=int, default=40, help="embeddings timed")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the JSON here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one detector here
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.rounds, args.embed_n)))
        return
    results = []
    for detector in args.detectors.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", detector, "--rounds", str(args.rounds),
                              "--embed-n", str(args.embed_n)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {"results": results, "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
              "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
