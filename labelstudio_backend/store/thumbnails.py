"""The gallery's pictures on disk: <MODEL_DIR>/<project>/thumbs/<annotation id>.<index>.png.

Derived data (learn/thumbnails.py renders them from the annotation's image and masks): each file appears whole
(temporary file + rename) but is not fsynced, since a lost thumbnail costs a blank tile in the gallery, not a byte of
the memory. Which thumbnails an annotation has, and of what, is in its AnnotationRecord (`thumbs`), written with the
memory; a file without a record entry is never shown, and replacing an annotation's set removes its old files."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

DIRECTORY = "thumbs"


class ThumbnailStore:
    def __init__(self, project_dir: Path):
        self.directory = Path(project_dir) / DIRECTORY

    def path(self, annotation_id: int, index: int) -> Path:
        return self.directory / f"{int(annotation_id)}.{int(index)}.png"

    def replace(self, annotation_id: int, pictures: list[bytes]) -> None:
        """The annotation's thumbnails become exactly `pictures` (index = position)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(pictures):
            handle, temp = tempfile.mkstemp(prefix=".thumb.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temp, self.path(annotation_id, index))
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        self._remove_from(annotation_id, len(pictures))

    def remove(self, annotation_id: int) -> None:
        self._remove_from(annotation_id, 0)

    def read(self, annotation_id: int, index: int) -> bytes | None:
        try:
            return self.path(annotation_id, index).read_bytes()
        except OSError:
            return None

    def _remove_from(self, annotation_id: int, first: int) -> None:
        if not self.directory.is_dir():
            return
        prefix = f"{int(annotation_id)}."
        for path in self.directory.glob(f"{int(annotation_id)}.*.png"):
            index = path.name[len(prefix):-len(".png")]
            if index.isdigit() and int(index) >= first:
                path.unlink(missing_ok=True)
