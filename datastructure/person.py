"""A training set: each person's photo encodings, and every photo skipped with its reason."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from datastructure.errors import DatasetNotValid


@dataclass
class Dataset:
    """Encodings with their person and source file; photos that taught nothing, with why."""

    encodings: list = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    people_seen: set[str] = field(default_factory=set)
    min_quality: float = 0.0  # faces whose quality scores under it are skipped (faces.min_enrol_quality)

    def add(self, person: str, name: str, faces, reason: str | None = None) -> None:
        """Record one photo: learned when it shows exactly one face, skipped otherwise."""
        self.people_seen.add(person)
        if reason is None and len(faces) != 1:
            reason = "no face found" if not faces else f"{len(faces)} faces found, expected one"
        if reason is None and getattr(faces[0], "quality", None) is not None:
            reason = faces[0].quality.refusal(self.min_quality)
        if reason is not None:
            self.skipped.append({"file": name, "person": person, "reason": reason})
            return
        self.encodings.append(faces[0].encoding)
        self.labels.append(person)
        self.files.append(name)

    def counts(self) -> dict[str, int]:
        """Return the photos learned per person, every person seen included."""
        learned = Counter(self.labels)
        return {person: learned.get(person, 0) for person in sorted(self.people_seen)}

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (encodings, labels, files) as arrays, after checking there is something to learn."""
        if not self.encodings:
            raise DatasetNotValid("no photo in the archive shows exactly one usable face",
                                  {"skipped": self.skipped})
        return (np.asarray(self.encodings, dtype=np.float64), np.asarray(self.labels, dtype=str),
                np.asarray(self.files, dtype=str))
