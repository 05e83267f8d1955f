"""How good one face is to learn from: its size, sharpness, pose and the detector that found it.

Computed once per face by the pipeline (``utils.faces.faces_in``), from pixels it already has:

* size: the face box's width in the photo's own pixels; ``SIZE_FULL`` px or more counts 1,
  half of it 0.5 (a 20-px face: 0.25);
* sharpness: the variance of the Laplacian of the grey face, resized to ``SHARPNESS_SIDE`` px
  so that faces of every size are measured alike; ``SHARPNESS_FULL`` or more counts 1 (on 80
  LFW and web photos, 95% of faces measure over 78 and the median 168; blurred by a Gaussian
  of 1 px radius the median falls to 25, of 2 px to 6);
* frontalness: from dlib's 5 landmarks (two corners of each eye, the base of the nose), how far
  the nose sits from the middle of the eyes, as a share of the eyes' distance. A frontal face
  has ~0 (the median of the same photos: 0.07, 99% under 0.38); ``YAW_ZERO`` counts 0 and half
  of it 0.5;
* detector: HOG finds frontal faces; a face only the CNN fallback finds is usually hard
  (turned, dark, small): it counts ``CNN_FACTOR``.

The score is the weakest of size, sharpness and frontalness, times the detector's factor, in
[0, 1]. Enrolment (every path: zip, people API, inbox, dialects) refuses a face scoring under
``faces.min_enrol_quality`` (0.35 by default: a face under 28 px wide, blurred under a
sharpness of 35, or with the nose off the eyes' middle by more than half their distance) and
says which part fell short. On celebrities/train that refuses 2 of 93 photos (both blurred),
on a tenth of lfw/people 4 of 286. Prediction answers for every face.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

SIZE_FULL = 80          # px of face width that count as full size (HOG's window)
SHARPNESS_SIDE = 100    # px: the grey face is resized to this square before the Laplacian
SHARPNESS_FULL = 100.0  # Laplacian variance that counts as fully sharp
YAW_ZERO = 0.8          # nose offset / eye distance at which frontalness reaches 0
CNN_FACTOR = 0.9


@dataclass(frozen=True)
class Quality:
    """One face's quality: the measures, each one's share in [0, 1], and the score."""

    width: int
    sharpness: float
    yaw: float | None  # nose offset / eye distance; None without landmarks
    detector: str
    score: float

    def as_dict(self) -> dict:
        """The JSON form (the envelope's ``quality``)."""
        return asdict(self)

    @classmethod
    def of(cls, data: dict | None) -> "Quality | None":
        """The Quality of an ``as_dict`` (None stays None)."""
        return None if not data else cls(int(data["width"]), float(data["sharpness"]),
                                         None if data.get("yaw") is None else float(data["yaw"]),
                                         str(data["detector"]), float(data["score"]))

    def shares(self) -> dict[str, float]:
        """Each part's share in [0, 1] (the score is the weakest, times the detector's)."""
        return {"size": min(1.0, self.width / SIZE_FULL),
                "sharpness": min(1.0, self.sharpness / SHARPNESS_FULL),
                "frontal": 1.0 if self.yaw is None else float(np.clip(1 - self.yaw / YAW_ZERO, 0, 1))}

    def problems(self, minimum: float) -> list[str]:
        """Why this face scores under ``minimum``, in words; [] when it does not."""
        if self.score >= minimum:
            return []
        shares, found = self.shares(), []
        factor = CNN_FACTOR if self.detector == "cnn" else 1.0
        if shares["size"] * factor < minimum:
            found.append(f"the face is {self.width} px wide; at least {int(np.ceil(minimum / factor * SIZE_FULL))} px are needed")
        if shares["sharpness"] * factor < minimum:
            found.append(f"the face is blurred (sharpness {self.sharpness:.0f}; at least "
                         f"{minimum / factor * SHARPNESS_FULL:.0f} is needed)")
        if shares["frontal"] * factor < minimum:
            found.append(f"the face is turned away (nose offset {self.yaw:.2f} of the eyes' distance)")
        if not found:
            found.append(f"found only by the CNN detector, with a quality of {self.score:.2f}")
        return found

    def refusal(self, minimum: float) -> str | None:
        """The reason an enrolment refuses this face (quality under ``minimum``), or None."""
        problems = self.problems(minimum)
        return None if not problems else f"quality {self.score:.2f} is under faces.min_enrol_quality ({minimum}): " \
                                         + "; ".join(problems)


def laplacian_variance(grey: np.ndarray) -> float:
    """Return the variance of the 4-neighbour Laplacian of a grey image (float array)."""
    if min(grey.shape) < 3:
        return 0.0
    lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
    return float(lap.var())


def sharpness_of(array: np.ndarray, box) -> float:
    """The Laplacian variance of the face in ``box`` (top, right, bottom, left, in ``array``'s
    pixels), its grey pixels resized to SHARPNESS_SIDE px."""
    top, right, bottom, left = (int(v) for v in box)
    top, left = max(top, 0), max(left, 0)
    face = array[top:max(bottom, top + 1), left:max(right, left + 1)]
    if face.size == 0:
        return 0.0
    grey = Image.fromarray(np.ascontiguousarray(face)).convert("L").resize((SHARPNESS_SIDE, SHARPNESS_SIDE),
                                                                          Image.BILINEAR)
    return laplacian_variance(np.asarray(grey, dtype=np.float64))


def yaw_of(landmarks) -> float | None:
    """Nose offset from the middle of the eyes, as a share of the eyes' distance, from dlib's
    5 points (0-1 one eye's corners, 2-3 the other's, 4 the base of the nose); None without."""
    if landmarks is None or len(landmarks) < 5:
        return None
    points = np.asarray(landmarks, dtype=np.float64)
    first, second, nose = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
    across = second - first
    distance = float(np.linalg.norm(across))
    if distance < 1e-6:
        return None
    offset = float(np.dot(nose - (first + second) / 2, across / distance))
    return round(abs(offset) / distance, 3)


def face_quality(array: np.ndarray, box, landmarks, detector: str, scale: float = 1.0) -> Quality:
    """The Quality of the face in ``box`` of ``array`` (the decoded pixels), whose photo is
    ``scale`` times larger than ``array``; ``landmarks``: dlib's 5 points, or None."""
    top, right, bottom, left = box
    quality = Quality(width=int(round((right - left) * scale)), sharpness=round(sharpness_of(array, box), 1),
                      yaw=yaw_of(landmarks), detector=detector, score=0.0)
    shares = quality.shares()
    score = min(shares.values()) * (CNN_FACTOR if detector == "cnn" else 1.0)
    return Quality(quality.width, quality.sharpness, quality.yaw, detector, round(float(score), 3))
