"""Per-image prediction → COCO result records. Shared by the in-process loop and the Ray actors, so both give
byte-identical output."""
from __future__ import annotations

from typing import Any

SCORE_DECIMALS = 6  # scores are rounded so that thread-count-dependent float noise cannot change the output file


def image_record(engine, source: Any, index: int, image_id: Any, category_ids: dict[str, int],
                 score_threshold: float) -> dict[str, Any]:
    """One line of the progress file: the image's size and its detections in the engine's order (best first).
    An unreadable image gives a record with "error" instead of "results"."""
    from ntt_engine import ImageLoadError, load_image
    from ntt_engine.export import mask_to_rle

    try:
        pixels = load_image(source, engine.config.max_image_pixels)
        instances = engine.predict(pixels, score_threshold=score_threshold)
    except (ImageLoadError, ValueError) as exc:
        return {"index": index, "image_id": image_id, "error": str(exc)}
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    results = []
    for inst in instances:
        mask = inst.full_mask()  # one original-size mask at a time
        rle = mask_to_rle(mask)
        results.append({"image_id": image_id, "category_id": category_ids[inst.label],
                        "bbox": [float(v) for v in inst.bbox], "score": round(float(inst.score), SCORE_DECIMALS),
                        "segmentation": {"size": [height, width], "counts": rle["counts"]},
                        "area": int(mask.sum())})
        del mask
    return {"index": index, "image_id": image_id, "width": width, "height": height, "results": results}


class PredictWorker:
    """Holds one engine and the memory; made a Ray actor by `ntt_cli.ray_runner` (one per GPU or CPU slot)."""

    def __init__(self, config: dict[str, Any], memory_bytes: bytes, category_ids: dict[str, int],
                 score_threshold: float):
        self.error = None
        self.category_ids = category_ids
        self.score_threshold = score_threshold
        try:
            from ntt_engine import Engine, EngineConfig, MemoryBank

            values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
            self.engine = Engine(EngineConfig(**values))
            self.engine.memory = self.engine.adopt_memory(MemoryBank.from_bytes(memory_bytes, "<memory>"))
        except Exception as exc:  # noqa: BLE001 - reported to the driver by ready(), which prints it
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        import torch

        return {"model_id": self.engine.model_id, "threads": torch.get_num_threads()}

    def predict(self, index: int, image_id: Any, data: bytes) -> dict[str, Any]:
        return image_record(self.engine, data, index, image_id, self.category_ids, self.score_threshold)
