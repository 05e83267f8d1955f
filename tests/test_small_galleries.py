"""Small galleries (issue 11): the smallest form of bench/small.py, on real photos.

Three random galleries of 3-8 people with 5-20 photos each, drawn from the five celebrities
and five LFW people, against 100 lfw/strangers photos each; this service's small-gallery
pipeline and rule against the plain recipe on its own faces (HOG, face_recognition's
encodings). The issue's targets must hold here too: recognition within 3
points of the plain recipe on every draw, no more wrong names and strangers than it. Its 1%
of strangers is bench/small.py's figure over 5,000 stranger faces; 300 cannot tell 1% from
2% (a stranger is 0.33%), so this smallest form bounds it at 2%.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from bench.small import encoded_pool, small_evaluation, verdicts

LFW_PEOPLE = ("Alvaro_Uribe", "Atal_Bihari_Vajpayee", "Gloria_Macapagal_Arroyo", "Jennifer_Capriati", "Hans_Blix")
CELEBRITIES = ("Ben Afflek", "Elton John", "Jerry Seinfield", "Madonna", "Mindy Kaling")


@pytest.fixture(scope="module")
def pool(faces, tmp_path_factory):
    cache = tmp_path_factory.mktemp("small") / "cache"
    seed = os.environ.get("PYRECOGNIZER_ENCODING_CACHE")  # a warm cache from an earlier run (same keys)
    if seed:
        shutil.copytree(seed, cache, dirs_exist_ok=True)
    return encoded_pool(faces, cache, people_wanted=CELEBRITIES + LFW_PEOPLE, strangers_wanted=200)


@pytest.mark.slow
def test_small_galleries_meet_the_issue_targets(pool):
    figures = small_evaluation(pool, draws=3, seed=0)
    ours, plain, alone = figures["ours"], figures["plain"], figures["rule_alone"]
    assert ours["photos"] == plain["photos"] == alone["photos"] > 50 and ours["strangers"] == 300
    assert all(3 <= row["people"] <= 8 for row in figures["per_draw"])
    met = verdicts(figures)
    assert met["worst draw >= plain - 3 points"], figures["per_draw"]
    assert met["wrong names <= plain"] and met["strangers accepted <= plain"], (ours, plain)
    assert ours["strangers_accepted_rate"] <= 0.02, ours
    # the plain recipe lets strangers in: the comparison means something
    assert plain["strangers_accepted"] > ours["strangers_accepted"]
    # the rule alone (plain's rule on our faces) lets strangers in too
    assert alone["no_face"] == ours["no_face"] and alone["strangers_accepted"] > ours["strangers_accepted"]


@pytest.mark.slow
def test_each_recipe_decides_on_its_own_faces(pool):
    """Ours are a small gallery's faces (the CNN fallback, mirrored encodings), plain's are
    face_recognition's on HOG's detections: the same photos, their faces found apart."""
    def no_face(people):
        return {(name, s.file) for name, samples in people.items() for s in samples if s.encoding is None}

    assert no_face(pool.ours) < no_face(pool.plain)  # celebrities photos HOG misses (shared README)
    ours, plain = pool.ours["Madonna"][0].encoding, pool.plain["Madonna"][0].encoding
    assert 0.0 < np.linalg.norm(ours - plain) < 0.2  # the mirror moves an encoding, a little


@pytest.mark.slow
def test_a_small_gallery_predict_finds_the_face_hog_misses(trained, faces):
    """celebrities/val/Ben Afflek/4.jpg has no face HOG finds (shared README): a model of 91
    photos is a small gallery, so predict runs the CNN fallback and names him; a model pinned
    to the cheap path (cnn_fallback_gallery_under 0) finds no face."""
    from dataclasses import replace

    from utils.recognition import prediction

    service, _ = trained
    photo = (faces / "celebrities" / "val" / "Ben Afflek" / "4.jpg").read_bytes()
    answer = service.predict(photo, save_annotated=False)["response"]
    assert answer["error"] is None and list(answer["data"]) == ["Ben Afflek"], answer
    cheap = prediction(photo, service.active, replace(service.predict_options, cnn_fallback=False), None, 0)
    assert cheap["response"]["error"] == "NO_FACE_FOUND"
