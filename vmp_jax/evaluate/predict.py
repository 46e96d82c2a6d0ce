"""`vmp predict`: a trained model on video files, top-k classes per video.

    predictor = Predictor.from_checkpoint("runs/demo")          # config from runs/demo
    for result in predictor.predict(["a.mp4", "b.mp4"]):
        print(result.video, result.top(3) if result.ok else result.error)

Each video is decoded into the config's test views (eval.num_clips x eval.num_crops, exactly
as `vmp eval` makes them, or one centre view), the softmax is averaged over the views, and the
classes are named from the label map (`vmp_jax.data.labels`) or numbered. A video that cannot
be read is reported with its reason and the others are still predicted.
"""

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from flax import nnx

from vmp_jax import storage
from vmp_jax.data import labels, listing, pipeline
from vmp_jax.data.decode import DecodeError
from vmp_jax.engine import checkpoint
from vmp_jax.engine.state import model_with_params
from vmp_jax.evaluate import multiview
from vmp_jax.experiment import load_config, load_saved_config, model_config
from vmp_jax.models.videomamba import VideoMamba


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """One video's prediction: the view-averaged probabilities (K,), or why it failed."""

    video: str
    probabilities: np.ndarray | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.probabilities is not None

    def top(self, k: int) -> list[tuple[int, float]]:
        """The k most probable (class index, probability), most probable first."""
        order = np.argsort(-self.probabilities)[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


def load_model(config, path: str, *, weights: str = "auto") -> tuple[VideoMamba, int, bool]:
    """The eval-mode model of a `vmp train` or `vmp import` checkpoint (a workdir, its
    checkpoints/ or one step directory): (model, step, whether the EMA copy was taken).
    Only the weights are read, not the optimiser state."""
    params, step, ema = multiview.restore_weights(config, path, weights=weights)
    model = model_with_params(model_config(config), params)
    model.eval()
    return model, step, ema


def checkpoint_config(path: str, config_file: str | None = None, overrides=()):
    """The config of a checkpoint: `config_file` if given, else the one its workdir saved."""
    if config_file:
        return load_config(config_file, overrides)
    if not storage.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return load_saved_config(checkpoint.workdir_of(path), overrides)


@nnx.jit
def _average_softmax(model: VideoMamba, views: jax.Array) -> jax.Array:
    """(V, T, S, S, 3) -> (K,): the softmax of every view, averaged (as `vmp eval`)."""
    return jax.nn.softmax(model(views), axis=-1).mean(0)


class Predictor:
    """A model and the settings that turn a video file into its test views."""

    def __init__(self, model: VideoMamba, config, *, views: int | None = None, class_names=None):
        """
        Args:
          views: None for the config's eval.num_clips x eval.num_crops views, 1 for one
            centre view.
          class_names: K names, or None for indices.
        """
        settings = pipeline.ClipSettings.from_config(config)
        if views == 1:
            settings = dataclasses.replace(settings, num_clips=1, num_crops=1)
        elif views is not None and views != settings.num_clips * settings.num_crops:
            raise ValueError(
                f"views must be 1 (one centre view) or the config's eval.num_clips x "
                f"eval.num_crops = {settings.num_clips * settings.num_crops}, got {views}"
            )
        self.model, self.settings, self.class_names = model, settings, class_names
        self.step, self.weights = None, ""

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        config_file: str | None = None,
        *,
        overrides=(),
        weights: str = "auto",
        views: int | None = None,
        label_map: str | None = None,
    ) -> "Predictor":
        """The predictor of a `vmp train` or `vmp import` checkpoint; its config comes from
        the workdir's config.json unless `config_file` is given."""
        storage.check_access([path, config_file or "", label_map or ""])
        config = checkpoint_config(path, config_file, overrides)
        run = checkpoint.workdir_of(path, default=None)  # never the current folder
        names = labels.class_names(config, label_map, workdir=run)
        model, step, ema = load_model(config, path, weights=weights)
        predictor = cls(model, config, views=views, class_names=names)
        predictor.step, predictor.weights = step, multiview.describe_weights(ema)
        return predictor

    @property
    def num_views(self) -> int:
        return self.settings.num_clips * self.settings.num_crops

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def views(self, video: str) -> np.ndarray:
        """float32 (V, T, S, S, 3): the video's test views; DecodeError if unreadable."""
        return pipeline.test_views(listing.VideoFile(video, -1, video), self.settings)

    def predict(self, videos: Sequence[str], *, workers: int = 2) -> list[VideoResult]:
        """One result per video, in order."""
        return list(self.iter_predict(videos, workers=workers))

    def iter_predict(self, videos: Sequence[str], *, workers: int = 2) -> Iterator[VideoResult]:
        """Results as they are ready; `workers` threads decode ahead of the model."""

        def decode(video: str):
            try:
                return self.views(video), ""
            except DecodeError as e:
                return None, str(e)

        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            for video, (views, error) in zip(videos, pool.map(decode, videos), strict=True):
                if views is None:
                    yield VideoResult(video, None, error)
                else:
                    probs = np.asarray(_average_softmax(self.model, views))  # (K,)
                    yield VideoResult(video, probs)


def read_video_list(path: str, data_root: str = "") -> list[str]:
    """The videos of a list file: its first field per line (`path`, `path label` or
    `path,label`), relative to data_root; blank and '#' lines skipped."""
    if not storage.isfile(path):
        raise FileNotFoundError(f"list file not found: {path}")
    videos = []
    for line in storage.read_text(path).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(",") if "," in line else line.rsplit(None, 1)
        name = fields[0] if len(fields) == 2 and fields[1].strip().isdigit() else line
        videos.append(storage.join(data_root, name.strip()))
    if not videos:
        raise ValueError(f"{path}: no videos listed")
    return videos


FORMATS = (".csv", ".json")


def write_results(results: list[VideoResult], path: str, class_name, top_k: int) -> None:
    """The top-k of every video as CSV (video, class_1, probability_1, ..., error) or as JSON
    ([{video, top: [{class, index, probability}], error}]), by the file's extension."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"--out must end in {' or '.join(FORMATS)}, got {path!r}")
    rows = []
    for r in results:
        top = r.top(top_k) if r.ok else []
        rows.append((r, [(class_name(i), i, p) for i, p in top]))
    body = io.StringIO(newline="")
    if extension == ".json":
        entries = [
            {
                "video": r.video,
                "top": [{"class": n, "index": i, "probability": p} for n, i, p in top],
                "error": r.error,
            }
            for r, top in rows
        ]
        json.dump(entries, body, indent=1)
    else:
        writer = csv.writer(body)
        ranks = [f"{what}_{k}" for k in range(1, top_k + 1) for what in ("class", "probability")]
        writer.writerow(["video", *ranks, "error"])
        for r, top in rows:
            cells = [x for n, _, p in top for x in (n, f"{p:.6g}")]
            writer.writerow([r.video, *cells, *[""] * (2 * top_k - len(cells)), r.error])
    storage.write_text(path, body.getvalue())
