"""Indexing speed of videos: time / clip length at 720p and 1080p, decode vs encode, memory at 4K.

Generates H.264 clips of the demo's shapes (30 fps, the encoder's default keyframe
interval and scene cuts), then for each size and model: the seconds
``Index.add_folder`` takes for one clip (the model loaded and warm before), as a
fraction of the clip's length; the seconds of decoding alone (keyframes, gap
fills, scaling: :func:`searchindex.models.video.decode_video`), so that the rest
is hashing and encoding; and the frames sampled and kept per minute.  Runs of
the same setting alternate with the others, and the median is reported.  Then the
peak memory of a fresh process decoding a 4K clip, against the same process
before it decodes.  Writes JSON (``--json FILE``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}


def _clip(folder: Path, name: str, size: str, seconds: float, seed: int, cache: Path | None = None) -> Path:
    from searchindex.demo.videos import random_clip, write_clip

    w, h = SIZES[size]
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = cache / f"{size}-{seconds:g}s-{seed}.mp4" if cache else None
    if kept is not None and kept.is_file():
        shutil.copyfile(kept, path)
        return path
    clip = random_clip(random.Random(seed), seconds, max(1, int(seconds // 10)))
    write_clip(path, clip, width=w, height=h, fps=30.0, codec="h264", seed=seed, options={"preset": "veryfast"})
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
    return path


def _memory(path: Path) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh process before and after decoding ``path``."""
    # VmHWM (this process's peak RSS): getrusage's ru_maxrss keeps the parent's peak across fork + exec.
    code = (
        "import re, sys\n"
        "from searchindex.models.video import decode_video\n"
        "import av\n"
        "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "before = hwm()\n"
        "v = decode_video(sys.argv[1])\n"
        "after = hwm()\n"
        "print(before / 1024, after / 1024, len(v.frames), v.seconds)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    before, after, frames, seconds = out.stdout.split()
    return {"rss_before_mib": float(before), "rss_peak_mib": float(after),
            "growth_mib": float(after) - float(before), "frames": int(frames), "decode_s": float(seconds)}


ACCURACY_CODECS = [("h264", ".mp4"), ("mpeg4", ".avi"), ("libvpx-vp9", ".webm"), ("hevc", ".mov"),
                   ("libsvtav1", ".mkv")]


def accuracy(tmp: Path, clips: int, seconds: float = 60.0, scenes: int = 5) -> dict[str, Any]:
    """Scenes found at their second: ``clips`` clips of ``seconds`` at 320x240, 15 fps, codecs in turn."""
    from searchindex import Index
    from searchindex.demo.videos import random_clip, write_clip
    from searchindex.store.catalog.videos import VideoReader

    folder = tmp / "accuracy"
    folder.mkdir()
    if clips * scenes > 40:
        raise SystemExit("at most 40 scenes: each is a colour and shape pair of its own")
    rng = random.Random(5)
    used: set[tuple[str, str]] = set()  # every scene a pair of its own: a query names one scene of one clip
    truth = {}
    per_codec: dict[str, list[int]] = {}
    for i in range(clips):
        codec, ext = ACCURACY_CODECS[i % len(ACCURACY_CODECS)]
        clip = random_clip(rng, seconds, scenes, used=used)
        path = folder / f"clip{i:02d}{ext}"
        write_clip(path, clip, width=320, height=240, fps=15.0, codec=codec, seed=i)
        truth[str(path)] = (codec, clip)
    with Index.create(tmp / "idx-accuracy", model="tiny-shapes", device="cpu") as idx:
        idx.add_folder(folder)
        reader = VideoReader(idx.catalog.read)
        within = first = total = 0
        kept = []
        for path, (codec, clip) in truth.items():
            vid = idx.catalog.read.ids_by_path([path])[path]
            kept.append(reader.facts([vid])[vid].frames * 60 / clip.duration)
            for sc in clip.scenes:
                total += 1
                results = idx.search(f"a {sc.scene.color} {sc.scene.shape}", k=clips)
                ours = [r for r in results if r.path == path]
                ok = bool(ours) and ours[0].timestamp is not None and \
                    sc.start - 2 <= ours[0].timestamp <= sc.end + 2
                within += ok
                first += bool(results) and results[0].path == path
                per_codec.setdefault(codec, [0, 0])
                per_codec[codec][0] += ok
                per_codec[codec][1] += 1
    return {"clips": clips, "scenes": total, "within_2s": round(within / total, 3),
            "video_ranked_first": round(first / total, 3), "frames_kept_per_min": round(statistics.mean(kept), 1),
            "per_codec_within_2s": {c: round(a / b, 3) for c, (a, b) in per_codec.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each clip (default 30)")
    ap.add_argument("--sizes", default="720p,1080p", help="comma-separated: 720p, 1080p")
    ap.add_argument("--models", default="tiny-shapes,ViT-B-32-256",
                    help="comma-separated; open_clip architectures run with --pretrained none")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per setting (median reported)")
    ap.add_argument("--memory-seconds", type=float, default=4.0, help="length of the 4K clip (0: skip)")
    ap.add_argument("--accuracy-clips", type=int, default=0,
                    help="also: scenes found within 2 s of their span in N (at most 8) 60 s clips of 5 scenes, "
                         "codecs in turn")
    ap.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True, help="run the speed part")
    ap.add_argument("--clips", type=Path, default=None,
                    help="keep the generated speed clips in this folder and reuse them (writing 1080p is slow)")
    ap.add_argument("--json", dest="json_out", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "seconds": args.seconds, "load_before": os.getloadavg()[0],
                               "runs": []}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if args.accuracy_clips:
            figures["accuracy"] = a = accuracy(tmp, args.accuracy_clips)
            print(f"{a['scenes']} scenes in {a['clips']} clips: {a['within_2s']:.1%} found within 2 s of their span, "
                  f"the video first for {a['video_ranked_first']:.1%}; {a['frames_kept_per_min']} frames kept per "
                  f"minute; per codec {a['per_codec_within_2s']}", flush=True)
        if args.speed:
            _speed(args, tmp, figures)
    figures["load_after"] = os.getloadavg()[0]
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))


def _speed(args: argparse.Namespace, tmp: Path, figures: dict[str, Any]) -> None:
    """Index time / clip length per size and model, decode share, 4K decode memory (see the module docstring)."""
    from searchindex import Index
    from searchindex.models.video import decode_video

    clips = {}
    for size in args.sizes.split(","):
        t = time.perf_counter()
        clips[size] = _clip(tmp / size, "clip.mp4", size, args.seconds, seed=1, cache=args.clips)
        print(f"wrote a {args.seconds:g} s {size} clip in {time.perf_counter() - t:.0f} s", flush=True)
    warm = _clip(tmp / "warm", "warm.mp4", "720p", 2.0, seed=2)
    indexes = {}
    for model in args.models.split(","):
        pretrained = None if model == "tiny-shapes" else "none"
        idx = Index.create(tmp / f"idx-{model}", model=model, pretrained=pretrained, device="cpu")
        idx.add_folder(warm.parent)  # loads the model: the timed runs are of a warm process
        indexes[model] = idx
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # CPU seconds of this process (all threads): less load-bound
    decode: dict[str, list[float]] = {}
    decode_cpu: dict[str, list[float]] = {}
    kept: dict[tuple[str, str], int] = {}
    sampled: dict[str, int] = {}
    for r in range(args.rounds):
        for size, path in clips.items():
            t, c = time.perf_counter(), time.process_time()
            video = decode_video(str(path))
            decode.setdefault(size, []).append(time.perf_counter() - t)
            decode_cpu.setdefault(size, []).append(time.process_time() - c)
            sampled[size] = len(video.frames)
            for model, idx in indexes.items():
                # Another name each round: the content is new to the index, so it is decoded and encoded.
                copy = path.parent / f"r{r}-{model}" / "clip.mp4"
                copy.parent.mkdir()
                with open(path, "rb") as src, open(copy, "wb") as dst:
                    dst.write(src.read())
                    dst.write(f"round {r} {model}".encode())  # trailing bytes: another SHA-256
                t, c = time.perf_counter(), time.process_time()
                summary = idx.add_folder(copy.parent)
                times.setdefault((size, model), []).append(time.perf_counter() - t)
                cpu.setdefault((size, model), []).append(time.process_time() - c)
                assert summary.indexed == 1, summary
                vid = idx.catalog.read.ids_by_path([str(copy)])[str(copy)]
                from searchindex.store.catalog.videos import VideoReader

                kept[(size, model)] = VideoReader(idx.catalog.read).facts([vid])[vid].frames
    for (size, model), runs in times.items():
        total = statistics.median(runs)
        dec = statistics.median(decode[size])
        cpu_total, cpu_dec = statistics.median(cpu[(size, model)]), statistics.median(decode_cpu[size])
        row = {"size": size, "model": model, "index_s": round(total, 3), "decode_s": round(dec, 3),
               "index_cpu_s": round(cpu_total, 3), "decode_cpu_s": round(cpu_dec, 3),
               "cpu_fraction_of_duration": round(cpu_total / args.seconds, 4),
               "fraction_of_duration": round(total / args.seconds, 4),
               "decode_share": round(min(1.0, dec / total), 3),
               "frames_sampled_per_min": round(sampled[size] * 60 / args.seconds, 1),
               "frames_kept_per_min": round(kept[(size, model)] * 60 / args.seconds, 1), "runs": runs}
        figures["runs"].append(row)
        print(f"{size:>6} {model:<14} index {total:6.2f} s = {total / args.seconds:.3f} x duration; decode "
              f"{dec:5.2f} s ({row['decode_share']:.0%}); frames/min sampled {row['frames_sampled_per_min']}, "
              f"kept {row['frames_kept_per_min']}; CPU {cpu_total:.2f} s ({cpu_total / args.seconds:.3f} x duration), "
              f"decoding {cpu_dec:.2f} s of it", flush=True)
    for idx in indexes.values():
        idx.close()
    if args.memory_seconds > 0:
        t = time.perf_counter()
        big = _clip(tmp / "4k", "clip.mp4", "4k", args.memory_seconds, seed=3, cache=args.clips)
        print(f"wrote a {args.memory_seconds:g} s 4K clip in {time.perf_counter() - t:.0f} s", flush=True)
        figures["memory_4k"] = _memory(big)
        m = figures["memory_4k"]
        print(f"4K decode: peak RSS {m['rss_peak_mib']:.0f} MiB, {m['growth_mib']:.0f} MiB over the process "
              f"before decoding; {m['frames']} frames in {m['decode_s']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
